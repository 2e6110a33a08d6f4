package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/wire"
)

// CertVersion is the format version of certificate and revocation bodies
// this build writes and reads.
const CertVersion = 1

// Domain-separation labels, one per kind of CA-signed object: the CA signs
// label || Body, so no signed body can be passed off as another kind. Each
// ends in NUL so that no label is a prefix of another.
const (
	labelNodeCert   = "epost node cert v1\x00"
	labelUserCert   = "epost user cert v1\x00"
	labelRevocation = "epost revocation v1\x00"
)

// CAFingerprint names a community: the SHA-256 of its CA's public key.
type CAFingerprint [sha256.Size]byte

// String is the fingerprint in hex.
func (f CAFingerprint) String() string { return hex.EncodeToString(f[:]) }

// Serial is a certificate's random serial number; revocation lists name
// certificates by it.
type Serial [16]byte

// String is the serial in hex.
func (s Serial) String() string { return hex.EncodeToString(s[:]) }

// Compare orders serials as big-endian numbers: -1, 0 or +1.
func (s Serial) Compare(o Serial) int { return bytes.Compare(s[:], o[:]) }

// CAPublicKey is the public key of a community CA; every member holds it
// and verifies certificates and revocation lists with it.
type CAPublicKey struct{ edPublic }

// ParseCAPublicKey reads a 32-byte Ed25519 public key.
func ParseCAPublicKey(b []byte) (CAPublicKey, error) {
	p, err := edPublicFromBytes("CA public key", b)
	if err != nil {
		return CAPublicKey{}, fmt.Errorf("identity: %w", err)
	}
	return CAPublicKey{p}, nil
}

// Fingerprint returns SHA-256 of the key.
func (k CAPublicKey) Fingerprint() CAFingerprint { return sha256.Sum256(k.k[:]) }

// CA is a community certificate authority: it holds the CA's private key
// and issues node and user certificates and revocation lists. It keeps no
// other state; the caller picks revocation epochs.
type CA struct{ key edPrivate }

// NewCA makes a CA with a fresh key from 32 bytes of r.
func NewCA(r io.Reader) (*CA, error) {
	k, err := edPrivateFromReader(r)
	if err != nil {
		return nil, fmt.Errorf("identity: new CA: %w", err)
	}
	return &CA{k}, nil
}

// Public returns the CA's public key.
func (ca *CA) Public() CAPublicKey { return CAPublicKey{ca.key.public()} }

// Fingerprint returns the CA's fingerprint.
func (ca *CA) Fingerprint() CAFingerprint { return ca.Public().Fingerprint() }

// String names the CA by fingerprint and hides its key from %v. (A value
// receiver, so that printing a CA value does not leak the key either.)
func (ca CA) String() string { return "CA(" + ca.Fingerprint().String() + ")" }

// GoString hides the key from %#v.
func (ca CA) GoString() string { return ca.String() }

// signed is the outer form of every CA-signed object. Body is kept as the
// exact bytes that were signed: verification checks the signature over
// them before anything in them is believed.
type signed struct {
	_    struct{} `cbor:",toarray"`
	Body []byte
	Sig  []byte
}

// sign encodes body and wraps it with the CA's signature under label.
func (ca *CA) sign(label string, body any) ([]byte, error) {
	b, err := wire.Marshal(body)
	if err != nil {
		return nil, err
	}
	return wire.Marshal(signed{Body: b, Sig: ca.key.sign(label, b)})
}

func readRandom(r io.Reader, p []byte) error {
	if _, err := io.ReadFull(r, p); err != nil {
		return fmt.Errorf("read randomness: %w", err)
	}
	return nil
}

// nodeCertBody is what a node certificate's CA signature covers.
type nodeCertBody struct {
	_       struct{} `cbor:",toarray"`
	Version uint16
	CA      []byte
	Serial  []byte
	NodeID  id.NodeID
	Key     []byte
}

// NodeCert binds a node's public key to the NodeID its CA drew for it.
type NodeCert struct {
	Version uint16
	CA      CAFingerprint
	Serial  Serial
	NodeID  id.NodeID
	Key     NodePublicKey

	raw []byte
}

// Bytes returns the signed encoding, to present on connect or store.
func (c *NodeCert) Bytes() []byte { return bytes.Clone(c.raw) }

// Matches reports whether the certificate is for k.
func (c *NodeCert) Matches(k NodeKey) bool { return c.Key == k.Public() }

// IssueNode certifies key with a NodeID and serial drawn from r. The
// NodeID is random, never derived from the key, so a node cannot choose
// where on the ring it lands.
func (ca *CA) IssueNode(r io.Reader, key NodePublicKey) (*NodeCert, error) {
	return ca.issueNode(r, key, id.NodeID{})
}

// ReissueNode certifies a new key for an existing node: the same NodeID,
// so the node keeps its place on the ring and what it stores, with a new
// serial (revoke the old certificate's).
func (ca *CA) ReissueNode(r io.Reader, key NodePublicKey, node id.NodeID) (*NodeCert, error) {
	if node.IsZero() {
		return nil, fmt.Errorf("identity: reissue node cert: zero node id")
	}
	return ca.issueNode(r, key, node)
}

func (ca *CA) issueNode(r io.Reader, key NodePublicKey, node id.NodeID) (*NodeCert, error) {
	if key.IsZero() {
		return nil, fmt.Errorf("identity: issue node cert: zero key")
	}
	c := &NodeCert{Version: CertVersion, CA: ca.Fingerprint(), Key: key, NodeID: node}
	// The zero id means "no node" in routing tables; draw again in the
	// (2^-128) case that it comes up.
	for c.NodeID.IsZero() {
		if err := readRandom(r, c.NodeID.ID[:]); err != nil {
			return nil, fmt.Errorf("identity: issue node cert: %w", err)
		}
	}
	if err := readRandom(r, c.Serial[:]); err != nil {
		return nil, fmt.Errorf("identity: issue node cert: %w", err)
	}
	raw, err := ca.sign(labelNodeCert, nodeCertBody{
		Version: c.Version, CA: c.CA[:], Serial: c.Serial[:], NodeID: c.NodeID, Key: key.k[:],
	})
	if err != nil {
		return nil, fmt.Errorf("identity: issue node cert: %w", err)
	}
	c.raw = raw
	return c, nil
}

// parseNodeBody decodes a node certificate body and checks its fields'
// shapes; it does not check the CA or the signature.
func parseNodeBody(b []byte) (*NodeCert, error) {
	var nb nodeCertBody
	if err := wire.Unmarshal(b, &nb); err != nil {
		return nil, asMalformed(err)
	}
	if err := checkVersion(nb.Version); err != nil {
		return nil, err
	}
	c := &NodeCert{Version: nb.Version, NodeID: nb.NodeID}
	if c.NodeID.IsZero() {
		return nil, fmt.Errorf("%w: zero node id", ErrMalformed)
	}
	if err := fixed(c.CA[:], nb.CA, "CA fingerprint"); err != nil {
		return nil, err
	}
	if err := fixed(c.Serial[:], nb.Serial, "serial"); err != nil {
		return nil, err
	}
	k, err := edPublicFromBytes("node key", nb.Key)
	if err != nil {
		return nil, err
	}
	c.Key = NodePublicKey{k}
	return c, nil
}

// userCertBody is what a user certificate's CA signature covers.
type userCertBody struct {
	_       struct{} `cbor:",toarray"`
	Version uint16
	CA      []byte
	Serial  []byte
	Address string
	UserID  id.UserID
	Signing []byte
	Sealing string
}

// UserCert binds a canonical address, and the UserID hashed from it, to
// the user's verifying and sealing keys.
type UserCert struct {
	Version uint16
	CA      CAFingerprint
	Serial  Serial
	Address string
	UserID  id.UserID
	Signing VerifyingKey
	Sealing SealingRecipient

	raw []byte
}

// Bytes returns the signed encoding, to publish in PAST or store.
func (c *UserCert) Bytes() []byte { return bytes.Clone(c.raw) }

// Matches reports whether the certificate is for keys.
func (c *UserCert) Matches(keys UserKeys) bool {
	return keys.Signing.k != nil && !keys.Sealing.IsZero() && c.Address == keys.Address &&
		c.Signing == keys.Signing.Public() && c.Sealing == keys.Sealing.Recipient()
}

// NewUser generates a user's keys for address and certifies them, all
// randomness from r.
func (ca *CA) NewUser(r io.Reader, address string) (UserKeys, *UserCert, error) {
	keys, err := GenerateUserKeys(r, address)
	if err != nil {
		return UserKeys{}, nil, err
	}
	cert, err := ca.IssueUser(r, keys.Address, keys.Signing.Public(), keys.Sealing.Recipient())
	if err != nil {
		return UserKeys{}, nil, err
	}
	return keys, cert, nil
}

// IssueUser certifies signing and sealing as the keys of address (which
// is canonicalised), with a serial drawn from r.
func (ca *CA) IssueUser(r io.Reader, address string, signing VerifyingKey, sealing SealingRecipient) (*UserCert, error) {
	addr, err := CanonicalAddress(address)
	if err != nil {
		return nil, fmt.Errorf("identity: issue user cert: %w", err)
	}
	if signing.IsZero() || sealing.IsZero() {
		return nil, fmt.Errorf("identity: issue user cert for %s: zero key", addr)
	}
	c := &UserCert{
		Version: CertVersion, CA: ca.Fingerprint(), Address: addr, UserID: id.ForUser(addr),
		Signing: signing, Sealing: sealing,
	}
	if err := readRandom(r, c.Serial[:]); err != nil {
		return nil, fmt.Errorf("identity: issue user cert for %s: %w", addr, err)
	}
	raw, err := ca.sign(labelUserCert, userCertBody{
		Version: c.Version, CA: c.CA[:], Serial: c.Serial[:], Address: addr, UserID: c.UserID,
		Signing: signing.k[:], Sealing: sealing.s,
	})
	if err != nil {
		return nil, fmt.Errorf("identity: issue user cert for %s: %w", addr, err)
	}
	c.raw = raw
	return c, nil
}

// parseUserBody decodes a user certificate body and checks its fields'
// shapes; it does not check the CA, the signature or the address.
func parseUserBody(b []byte) (*UserCert, error) {
	var ub userCertBody
	if err := wire.Unmarshal(b, &ub); err != nil {
		return nil, asMalformed(err)
	}
	if err := checkVersion(ub.Version); err != nil {
		return nil, err
	}
	c := &UserCert{Version: ub.Version, Address: ub.Address, UserID: ub.UserID}
	if err := fixed(c.CA[:], ub.CA, "CA fingerprint"); err != nil {
		return nil, err
	}
	if err := fixed(c.Serial[:], ub.Serial, "serial"); err != nil {
		return nil, err
	}
	k, err := edPublicFromBytes("signing key", ub.Signing)
	if err != nil {
		return nil, err
	}
	c.Signing = VerifyingKey{k}
	if c.Sealing, err = ParseSealingRecipient(ub.Sealing); err != nil {
		return nil, err
	}
	return c, nil
}

func checkVersion(v uint16) error {
	if v != CertVersion {
		return fmt.Errorf("%w: %w: body version %d, this build reads %d", ErrMalformed, wire.ErrVersion, v, CertVersion)
	}
	return nil
}

// fixed copies src into dst, refusing any other length.
func fixed(dst, src []byte, what string) error {
	if len(src) != len(dst) {
		return malformed("%s of %d bytes, want %d", what, len(src), len(dst))
	}
	copy(dst, src)
	return nil
}

// openSigned decodes the outer form of a CA-signed object and checks its
// signature over label || Body. When the signature fails, caOf (which
// decodes the unverified body) tells a foreign community's object
// (ErrWrongCA) from a tampered one (ErrTampered); nothing else in an
// unverified body is used.
func openSigned(ca CAPublicKey, label string, b []byte, caOf func([]byte) (CAFingerprint, bool)) ([]byte, error) {
	var s signed
	if err := wire.Unmarshal(b, &s); err != nil {
		return nil, asMalformed(err)
	}
	if len(s.Sig) != ed25519.SignatureSize {
		return nil, malformed("signature of %d bytes, want %d", len(s.Sig), ed25519.SignatureSize)
	}
	if !ca.verify(label, s.Body, s.Sig) {
		if fp, ok := caOf(s.Body); ok && fp != ca.Fingerprint() {
			return nil, fmt.Errorf("%w: issuer %s, want %s", ErrWrongCA, fp, ca.Fingerprint())
		}
		return nil, ErrTampered
	}
	return s.Body, nil
}
