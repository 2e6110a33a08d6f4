package identity

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/epost-mail/epost/internal/id"
)

// Verifier checks certificates and revocation lists against one
// community's CA and the newest revocation list it has seen.
//
// A Verifier may be shared by any number of goroutines (the transport's
// handshakes, the node's event loop). Its revocation list only moves
// forward: Adopt installs a newer one in place, so every holder of the
// Verifier enforces it at once; WithRevocation returns a new Verifier
// instead.
type Verifier struct {
	ca  CAPublicKey
	fp  CAFingerprint
	rev atomic.Pointer[Revocation] // nil: epoch 0, nothing revoked
	// signed remembers certificates whose CA signature checked out, so a
	// certificate that comes with every stored object is verified once,
	// not at every replica write. Shared by the Verifiers WithRevocation
	// derives (revocation is checked on every call, never cached).
	signed *sigCache
}

// sigCache maps a certificate's SHA-256 to its parsed body.
type sigCache struct {
	mu    sync.Mutex
	nodes map[[32]byte]NodeCert
	users map[[32]byte]UserCert
}

// maxCached bounds each map; a full map is cleared (the next uses refill
// it), which keeps memory bounded without bookkeeping.
const maxCached = 4096

func (s *sigCache) node(k [32]byte) (NodeCert, bool) {
	if s == nil {
		return NodeCert{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.nodes[k]
	return c, ok
}

func (s *sigCache) putNode(k [32]byte, c NodeCert) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.nodes) >= maxCached {
		clear(s.nodes)
	}
	s.nodes[k] = c
}

func (s *sigCache) user(k [32]byte) (UserCert, bool) {
	if s == nil {
		return UserCert{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.users[k]
	return c, ok
}

func (s *sigCache) putUser(k [32]byte, c UserCert) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.users) >= maxCached {
		clear(s.users)
	}
	s.users[k] = c
}

// NewVerifier returns a Verifier for the CA with key ca, at revocation
// epoch 0 (nothing revoked).
func NewVerifier(ca CAPublicKey) *Verifier {
	return &Verifier{ca: ca, fp: ca.Fingerprint(), signed: &sigCache{nodes: map[[32]byte]NodeCert{}, users: map[[32]byte]UserCert{}}}
}

// CA returns the CA public key the Verifier trusts.
func (v *Verifier) CA() CAPublicKey { return v.ca }

// Epoch returns the epoch of the revocation list held (0 if none).
func (v *Verifier) Epoch() uint64 { return v.rev.Load().epoch() }

// Revocation returns the revocation list held, nil at epoch 0. The caller
// must not modify it.
func (v *Verifier) Revocation() *Revocation { return v.rev.Load() }

// VerifyNode checks a node certificate: its signature by this CA, its
// shape, and that its serial is not revoked.
func (v *Verifier) VerifyNode(cert []byte) (*NodeCert, error) {
	k := sha256.Sum256(cert)
	if c, ok := v.signed.node(k); ok {
		return v.checkNode(&c, cert)
	}
	body, err := openSigned(v.ca, labelNodeCert, cert, func(b []byte) (CAFingerprint, bool) {
		c, err := parseNodeBody(b)
		if err != nil {
			return CAFingerprint{}, false
		}
		return c.CA, true
	})
	if err != nil {
		return nil, fmt.Errorf("identity: verify node cert: %w", err)
	}
	c, err := parseNodeBody(body)
	if err != nil {
		return nil, fmt.Errorf("identity: verify node cert: %w", err)
	}
	if c.CA != v.fp {
		// Signed by our key yet naming another CA: only a broken CA does
		// this, but never accept it.
		return nil, fmt.Errorf("identity: verify node cert: %w: names %s, signed by %s", ErrWrongCA, c.CA, v.fp)
	}
	v.signed.putNode(k, *c)
	return v.checkNode(c, cert)
}

// checkNode is what VerifyNode checks beyond the signature, every time.
func (v *Verifier) checkNode(c *NodeCert, cert []byte) (*NodeCert, error) {
	if v.rev.Load().IsRevoked(c.Serial) {
		return nil, fmt.Errorf("identity: verify node cert %s (node %s): %w at epoch %d", c.Serial, c.NodeID, ErrRevoked, v.Epoch())
	}
	c.raw = bytes.Clone(cert)
	return c, nil
}

// VerifyUser checks a user certificate: its signature by this CA, its
// shape, that it is for wantAddress (compared in canonical form) and that
// its UserID is id.ForUser of that address, and that its serial is not
// revoked.
func (v *Verifier) VerifyUser(cert []byte, wantAddress string) (*UserCert, error) {
	want, err := CanonicalAddress(wantAddress)
	if err != nil {
		return nil, fmt.Errorf("identity: verify user cert: %w", err)
	}
	k := sha256.Sum256(cert)
	if c, ok := v.signed.user(k); ok {
		return v.checkUser(&c, cert, want)
	}
	body, err := openSigned(v.ca, labelUserCert, cert, func(b []byte) (CAFingerprint, bool) {
		c, err := parseUserBody(b)
		if err != nil {
			return CAFingerprint{}, false
		}
		return c.CA, true
	})
	if err != nil {
		return nil, fmt.Errorf("identity: verify user cert for %s: %w", want, err)
	}
	c, err := parseUserBody(body)
	if err != nil {
		return nil, fmt.Errorf("identity: verify user cert for %s: %w", want, err)
	}
	if c.CA != v.fp {
		return nil, fmt.Errorf("identity: verify user cert for %s: %w: names %s, signed by %s", want, ErrWrongCA, c.CA, v.fp)
	}
	v.signed.putUser(k, *c)
	return v.checkUser(c, cert, want)
}

// checkUser is what VerifyUser checks beyond the signature, every time.
func (v *Verifier) checkUser(c *UserCert, cert []byte, want string) (*UserCert, error) {
	if c.Address != want {
		return nil, fmt.Errorf("identity: verify user cert for %s: %w: certificate is for %q", want, ErrWrongAddress, c.Address)
	}
	if c.UserID != id.ForUser(c.Address) {
		return nil, fmt.Errorf("identity: verify user cert for %s: %w: user id %s is not H(address)", want, ErrWrongAddress, c.UserID)
	}
	if v.rev.Load().IsRevoked(c.Serial) {
		return nil, fmt.Errorf("identity: verify user cert %s for %s: %w at epoch %d", c.Serial, want, ErrRevoked, v.Epoch())
	}
	c.raw = bytes.Clone(cert)
	return c, nil
}

// VerifyRevocation checks a revocation list's signature by this CA and
// its shape. It does not compare epochs; WithRevocation does.
func (v *Verifier) VerifyRevocation(list []byte) (*Revocation, error) {
	body, err := openSigned(v.ca, labelRevocation, list, func(b []byte) (CAFingerprint, bool) {
		r, err := parseRevocationBody(b)
		if err != nil {
			return CAFingerprint{}, false
		}
		return r.CA, true
	})
	if err != nil {
		return nil, fmt.Errorf("identity: verify revocation: %w", err)
	}
	r, err := parseRevocationBody(body)
	if err != nil {
		return nil, fmt.Errorf("identity: verify revocation: %w", err)
	}
	if r.CA != v.fp {
		return nil, fmt.Errorf("identity: verify revocation epoch %d: %w: names %s, signed by %s", r.Epoch, ErrWrongCA, r.CA, v.fp)
	}
	r.raw = bytes.Clone(list)
	return r, nil
}

// Adopt verifies list and, when it is newer than the list held, installs
// it in this Verifier, for every holder. It reports whether it did; an
// older or equal list is not an error (gossip repeats itself), a list at
// the held epoch with other contents is (ErrStaleRevocation).
func (v *Verifier) Adopt(list []byte) (bool, error) {
	r, err := v.VerifyRevocation(list)
	if err != nil {
		return false, err
	}
	for {
		cur := v.rev.Load()
		switch {
		case r.Newer(cur):
			if v.rev.CompareAndSwap(cur, r) {
				return true, nil
			}
		case r.Epoch == cur.epoch() && !slices.Equal(r.revoked, cur.revoked):
			return false, fmt.Errorf("identity: revocation epoch %d: %w: a different list at the same epoch", r.Epoch, ErrStaleRevocation)
		default:
			return false, nil
		}
	}
}

// WithRevocation verifies list and returns a Verifier holding it. It
// refuses (ErrStaleRevocation) a list older than the one held, and a
// different list at the same epoch (the CA never signs two); the very
// same list again returns v unchanged, since gossip repeats itself.
func (v *Verifier) WithRevocation(list []byte) (*Verifier, error) {
	r, err := v.VerifyRevocation(list)
	if err != nil {
		return nil, err
	}
	cur := v.rev.Load()
	switch {
	case r.Newer(cur):
		nv := &Verifier{ca: v.ca, fp: v.fp, signed: v.signed}
		nv.rev.Store(r)
		return nv, nil
	case r.Epoch == v.Epoch() && slices.Equal(r.revoked, cur.revoked):
		return v, nil
	case r.Epoch == v.Epoch():
		return nil, fmt.Errorf("identity: revocation epoch %d: %w: a different list at the same epoch", r.Epoch, ErrStaleRevocation)
	default:
		return nil, fmt.Errorf("identity: revocation epoch %d: %w: holding epoch %d", r.Epoch, ErrStaleRevocation, v.Epoch())
	}
}
