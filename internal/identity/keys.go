package identity

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
)

// edPublic is the shared representation of the Ed25519 public key types.
// It is embedded, never exported, so each public type keeps its own name.
type edPublic struct{ k [ed25519.PublicKeySize]byte }

// Bytes returns a copy of the 32-byte Ed25519 public key.
func (p edPublic) Bytes() []byte { return append([]byte(nil), p.k[:]...) }

// Ed25519 returns the key as a crypto/ed25519 public key (a copy).
func (p edPublic) Ed25519() ed25519.PublicKey { return ed25519.PublicKey(p.Bytes()) }

// String is the key in hex.
func (p edPublic) String() string { return hex.EncodeToString(p.k[:]) }

// IsZero reports whether the key is unset.
func (p edPublic) IsZero() bool { return p.k == [ed25519.PublicKeySize]byte{} }

// verify checks sig over label || msg. The label separates the kinds of
// signed things, so a signature over one can never pass as another.
func (p edPublic) verify(label string, msg, sig []byte) bool {
	if len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(p.k[:], labelled(label, msg), sig)
}

func edPublicFromBytes(what string, b []byte) (edPublic, error) {
	var p edPublic
	if len(b) != ed25519.PublicKeySize {
		return p, malformed("%s: %d bytes, want %d", what, len(b), ed25519.PublicKeySize)
	}
	copy(p.k[:], b)
	return p, nil
}

// edPrivate is the shared representation of the Ed25519 private key types.
type edPrivate struct{ k ed25519.PrivateKey }

func edPrivateFromReader(r io.Reader) (edPrivate, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(r, seed); err != nil {
		return edPrivate{}, fmt.Errorf("read randomness: %w", err)
	}
	// NewKeyFromSeed rather than GenerateKey: the seed comes from the
	// caller's reader, so simulations are reproducible whatever the
	// standard library does with GenerateKey's reader.
	return edPrivate{ed25519.NewKeyFromSeed(seed)}, nil
}

func edPrivateFromSeed(what string, seed []byte) (edPrivate, error) {
	if len(seed) != ed25519.SeedSize {
		return edPrivate{}, malformed("%s: seed of %d bytes, want %d", what, len(seed), ed25519.SeedSize)
	}
	return edPrivate{ed25519.NewKeyFromSeed(seed)}, nil
}

func (p edPrivate) seed() []byte { return p.k.Seed() }

func (p edPrivate) public() edPublic {
	var pub edPublic
	copy(pub.k[:], p.k.Public().(ed25519.PublicKey))
	return pub
}

func (p edPrivate) sign(label string, msg []byte) []byte {
	return ed25519.Sign(p.k, labelled(label, msg))
}

func labelled(label string, msg []byte) []byte {
	b := make([]byte, 0, len(label)+len(msg))
	return append(append(b, label...), msg...)
}

const redacted = "(redacted)"

// SigningKey is a user's private Ed25519 key: it signs what the user
// writes (folder logs, mutable objects). The zero value is not a key;
// its methods panic.
type SigningKey struct{ edPrivate }

// VerifyingKey is the public half of a SigningKey.
type VerifyingKey struct{ edPublic }

// GenerateSigningKey makes a signing key from 32 bytes of r.
func GenerateSigningKey(r io.Reader) (SigningKey, error) {
	k, err := edPrivateFromReader(r)
	if err != nil {
		return SigningKey{}, fmt.Errorf("identity: generate signing key: %w", err)
	}
	return SigningKey{k}, nil
}

// Public returns the verifying key.
func (k SigningKey) Public() VerifyingKey { return VerifyingKey{k.public()} }

// Sign signs label || msg. The label names what is signed (for example
// "epost folder log v1\x00") so a signature cannot be replayed as a
// signature over another kind of message; it must not be a prefix of
// another label in use.
func (k SigningKey) Sign(label string, msg []byte) []byte { return k.sign(label, msg) }

// String hides the key from logs and %v.
func (k SigningKey) String() string { return "SigningKey" + redacted }

// GoString hides the key from %#v.
func (k SigningKey) GoString() string { return k.String() }

// Verify reports whether sig is k's signature over label || msg.
func (p VerifyingKey) Verify(label string, msg, sig []byte) bool { return p.verify(label, msg, sig) }

// ParseVerifyingKey reads a 32-byte Ed25519 public key.
func ParseVerifyingKey(b []byte) (VerifyingKey, error) {
	p, err := edPublicFromBytes("verifying key", b)
	if err != nil {
		return VerifyingKey{}, fmt.Errorf("identity: %w", err)
	}
	return VerifyingKey{p}, nil
}

// NodeKey is a node's private Ed25519 key. It is the node's libp2p peer
// identity; its certificate binds it to the node's NodeID. The zero value
// is not a key; its methods panic.
type NodeKey struct{ edPrivate }

// NodePublicKey is the public half of a NodeKey.
type NodePublicKey struct{ edPublic }

// GenerateNodeKey makes a node key from 32 bytes of r.
func GenerateNodeKey(r io.Reader) (NodeKey, error) {
	k, err := edPrivateFromReader(r)
	if err != nil {
		return NodeKey{}, fmt.Errorf("identity: generate node key: %w", err)
	}
	return NodeKey{k}, nil
}

// Public returns the node's public key.
func (k NodeKey) Public() NodePublicKey { return NodePublicKey{k.public()} }

// Ed25519 returns the key as a crypto/ed25519 private key (a copy), for
// the transport's handshake.
func (k NodeKey) Ed25519() ed25519.PrivateKey { return append(ed25519.PrivateKey(nil), k.k...) }

// Sign signs label || msg: storage receipts and other statements a node
// makes about itself.
func (k NodeKey) Sign(label string, msg []byte) []byte { return k.sign(label, msg) }

// Verify checks a signature made by NodeKey.Sign with the same label.
func (p NodePublicKey) Verify(label string, msg, sig []byte) bool { return p.verify(label, msg, sig) }

// String hides the key from logs and %v.
func (k NodeKey) String() string { return "NodeKey" + redacted }

// GoString hides the key from %#v.
func (k NodeKey) GoString() string { return k.String() }

// ParseNodePublicKey reads a 32-byte Ed25519 public key.
func ParseNodePublicKey(b []byte) (NodePublicKey, error) {
	p, err := edPublicFromBytes("node public key", b)
	if err != nil {
		return NodePublicKey{}, fmt.Errorf("identity: %w", err)
	}
	return NodePublicKey{p}, nil
}

// SealingKey is a user's private X25519 key: it opens what others seal to
// the user (notifications, message keys) with age. The zero value is not
// a key.
type SealingKey struct{ id *age.X25519Identity }

// SealingRecipient is the public half of a SealingKey, kept as its age
// encoding ("age1..."), which is validated on construction.
type SealingRecipient struct{ s string }

// GenerateSealingKey makes a sealing key from 32 bytes of r. (age's own
// generator reads crypto/rand, which would make simulations
// irreproducible.)
func GenerateSealingKey(r io.Reader) (SealingKey, error) {
	scalar := make([]byte, 32)
	if _, err := io.ReadFull(r, scalar); err != nil {
		return SealingKey{}, fmt.Errorf("identity: generate sealing key: read randomness: %w", err)
	}
	// age accepts any 32 bytes as an X25519 scalar; it only offers a parser
	// for the bech32 form, so encode the raw bytes first.
	k, err := ParseSealingKey(strings.ToUpper(bech32Encode("age-secret-key-", scalar)))
	if err != nil {
		return SealingKey{}, fmt.Errorf("identity: generate sealing key: %w", err)
	}
	return k, nil
}

// ParseSealingKey reads an age X25519 secret key ("AGE-SECRET-KEY-1...").
func ParseSealingKey(s string) (SealingKey, error) {
	id, err := age.ParseX25519Identity(s)
	if err != nil {
		// age's message never contains the key itself.
		return SealingKey{}, malformed("sealing key: %v", err)
	}
	return SealingKey{id}, nil
}

// Recipient returns the public half.
func (k SealingKey) Recipient() SealingRecipient {
	return SealingRecipient{k.id.Recipient().String()}
}

// AgeIdentity returns the key for age.Decrypt.
func (k SealingKey) AgeIdentity() *age.X25519Identity { return k.id }

// IsZero reports whether the key is unset.
func (k SealingKey) IsZero() bool { return k.id == nil }

// equal compares in constant time.
func (k SealingKey) equal(o SealingKey) bool {
	if k.id == nil || o.id == nil {
		return k.id == o.id
	}
	return subtle.ConstantTimeCompare([]byte(k.id.String()), []byte(o.id.String())) == 1
}

// secret is the age encoding, for key files only.
func (k SealingKey) secret() string { return k.id.String() }

// String hides the key from logs and %v.
func (k SealingKey) String() string { return "SealingKey" + redacted }

// GoString hides the key from %#v.
func (k SealingKey) GoString() string { return k.String() }

// ParseSealingRecipient reads an age X25519 recipient ("age1...").
func ParseSealingRecipient(s string) (SealingRecipient, error) {
	a, err := age.ParseX25519Recipient(s)
	if err != nil {
		return SealingRecipient{}, malformed("sealing recipient: %v", err)
	}
	// Keep age's own encoding (bech32 also accepts upper case), so equal
	// keys compare equal.
	return SealingRecipient{a.String()}, nil
}

// String is the age encoding, "age1...".
func (r SealingRecipient) String() string { return r.s }

// IsZero reports whether the recipient is unset.
func (r SealingRecipient) IsZero() bool { return r.s == "" }

// AgeRecipient returns the recipient for age.Encrypt. It panics on the
// zero SealingRecipient, which was never validated.
func (r SealingRecipient) AgeRecipient() *age.X25519Recipient {
	a, err := age.ParseX25519Recipient(r.s)
	if err != nil {
		panic("identity: AgeRecipient of an invalid SealingRecipient: " + err.Error())
	}
	return a
}

// UserKeys are a user's private keys, all that must survive the loss of
// the user's node, and the address they belong to.
type UserKeys struct {
	Address string
	Signing SigningKey
	Sealing SealingKey
	// Retired are the keys the user held before each rotation, newest
	// first (each with no Retired of its own). They sign and certify
	// nothing new; they are kept because what was sealed to them (mail
	// sealed to the old sealing key, folder logs under secrets derived
	// from the old signing key) must stay readable, and the key backup
	// must restore all of it.
	Retired []UserKeys
}

// GenerateUserKeys makes fresh keys for address (which must be valid; it
// is canonicalised) from 64 bytes of r.
func GenerateUserKeys(r io.Reader, address string) (UserKeys, error) {
	addr, err := CanonicalAddress(address)
	if err != nil {
		return UserKeys{}, fmt.Errorf("identity: generate user keys: %w", err)
	}
	sk, err := GenerateSigningKey(r)
	if err != nil {
		return UserKeys{}, err
	}
	xk, err := GenerateSealingKey(r)
	if err != nil {
		return UserKeys{}, err
	}
	return UserKeys{Address: addr, Signing: sk, Sealing: xk}, nil
}

// Rotate returns fresh keys for the same address, from 64 bytes of r,
// with u's keys (current and retired) as the new keys' Retired.
func (u UserKeys) Rotate(r io.Reader) (UserKeys, error) {
	next, err := GenerateUserKeys(r, u.Address)
	if err != nil {
		return UserKeys{}, err
	}
	next.Retired = u.Generations()
	return next, nil
}

// Generations returns the current keys, then the retired ones newest
// first, each without Retired: every key pair anything of the user's may
// have been sealed to.
func (u UserKeys) Generations() []UserKeys {
	cur := u
	cur.Retired = nil
	return append([]UserKeys{cur}, u.Retired...)
}

// Generation counts the key pairs the user has held: 1 until the first
// rotation. It only grows, so it versions what the user republishes when
// the keys change (certificate, key backup).
func (u UserKeys) Generation() uint64 { return uint64(1 + len(u.Retired)) }

// Equal reports whether u and o hold the same address and keys, retired
// keys included.
func (u UserKeys) Equal(o UserKeys) bool {
	if u.Address != o.Address || u.Signing.k == nil || o.Signing.k == nil || len(u.Retired) != len(o.Retired) {
		return false
	}
	for i := range u.Retired {
		if !u.Retired[i].Equal(o.Retired[i]) {
			return false
		}
	}
	return subtle.ConstantTimeCompare(u.Signing.seed(), o.Signing.seed()) == 1 && u.Sealing.equal(o.Sealing)
}

// DeriveSecret derives a 32-byte secret named by label from the user's
// keys: HKDF-SHA256 (RFC 5869) over the signing key's seed, salted with
// the address, with label as the info. Secrets derived this way (such as
// a folder log's key) need no backup of their own: the key backup, which
// holds UserKeys, restores them. Distinct labels give independent
// secrets, and none reveals the signing key. It panics on zero keys.
func (u UserKeys) DeriveSecret(label string) [32]byte {
	k, err := hkdf.Key(sha256.New, u.Signing.seed(), []byte(u.Address), label, 32)
	if err != nil {
		panic("identity: HKDF-SHA256 of 32 bytes: " + err.Error()) // only for lengths over 255*32
	}
	return [32]byte(k)
}
