package identity

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/epost-mail/epost/internal/wire"
)

// revocationBody is what a revocation list's CA signature covers.
type revocationBody struct {
	_       struct{} `cbor:",toarray"`
	Version uint16
	CA      []byte
	Epoch   uint64
	Revoked [][]byte
}

// Revocation is a CA-signed revocation list: every certificate whose
// serial it names is void. Epochs only grow: a list replaces another only
// if its Epoch is larger, so a peer replaying an old list cannot
// un-revoke anyone. Epoch 0 is the implicit empty list every Verifier
// starts with; issued lists have Epoch >= 1. The serials are kept sorted
// and distinct, which the decoder checks so that the encoding is unique.
type Revocation struct {
	Version uint16
	CA      CAFingerprint
	Epoch   uint64

	revoked []Serial
	raw     []byte
}

// IssueRevocation signs the list of revoked serials as epoch (>= 1). The
// caller picks epochs and must make each one larger than the last it
// published; the list is normally the previous one plus new serials.
func (ca *CA) IssueRevocation(epoch uint64, revoked []Serial) (*Revocation, error) {
	if epoch == 0 {
		return nil, fmt.Errorf("identity: issue revocation: epoch 0 is reserved for the empty initial list")
	}
	list := slices.Clone(revoked)
	slices.SortFunc(list, Serial.Compare)
	list = slices.Compact(list)
	r := &Revocation{Version: CertVersion, CA: ca.Fingerprint(), Epoch: epoch, revoked: list}
	body := revocationBody{Version: r.Version, CA: r.CA[:], Epoch: epoch, Revoked: make([][]byte, len(list))}
	for i := range list {
		body.Revoked[i] = list[i][:]
	}
	raw, err := ca.sign(labelRevocation, body)
	if err != nil {
		return nil, fmt.Errorf("identity: issue revocation epoch %d: %w", epoch, err)
	}
	r.raw = raw
	return r, nil
}

// parseRevocationBody decodes a revocation body and checks its shape
// (serial lengths, strict order); it does not check the CA or signature.
func parseRevocationBody(b []byte) (*Revocation, error) {
	var rb revocationBody
	if err := wire.Unmarshal(b, &rb); err != nil {
		return nil, asMalformed(err)
	}
	if err := checkVersion(rb.Version); err != nil {
		return nil, err
	}
	if rb.Epoch == 0 {
		return nil, malformed("revocation epoch 0")
	}
	r := &Revocation{Version: rb.Version, Epoch: rb.Epoch, revoked: make([]Serial, len(rb.Revoked))}
	if err := fixed(r.CA[:], rb.CA, "CA fingerprint"); err != nil {
		return nil, err
	}
	for i, s := range rb.Revoked {
		if err := fixed(r.revoked[i][:], s, "revoked serial"); err != nil {
			return nil, err
		}
		if i > 0 && bytes.Compare(rb.Revoked[i-1], s) >= 0 {
			return nil, malformed("revoked serials not strictly ascending at %d", i)
		}
	}
	return r, nil
}

// Bytes returns the signed encoding, to spread with overlay traffic.
func (r *Revocation) Bytes() []byte { return bytes.Clone(r.raw) }

// Revoked returns the revoked serials in ascending order (a copy).
func (r *Revocation) Revoked() []Serial { return slices.Clone(r.revoked) }

// IsRevoked reports whether s is in the list. A nil list revokes nothing.
func (r *Revocation) IsRevoked(s Serial) bool {
	if r == nil {
		return false
	}
	_, found := slices.BinarySearchFunc(r.revoked, s, Serial.Compare)
	return found
}

// Newer reports whether r should replace other: r has a larger epoch. A
// nil list stands for epoch 0.
func (r *Revocation) Newer(other *Revocation) bool { return r.epoch() > other.epoch() }

func (r *Revocation) epoch() uint64 {
	if r == nil {
		return 0
	}
	return r.Epoch
}
