package post

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"filippo.io/age"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// Notifications (DESIGN.md section 6, "Notification"): the sender signs a
// Notification, seals it to each recipient (Seal), and the sending node
// signs the Sealed form, which is stored in the recipient's pending set
// until the recipient's Release drops it.

// Version is the format version of Notification, Sealed and Release that
// this build writes and reads.
const Version = 1

// Bounds, checked before anything is decrypted or verified, so a hostile
// object costs a bounded amount of memory and work.
const (
	// MaxRecipients bounds a notification's recipient list.
	MaxRecipients = 1000
	// MaxPayload bounds a sealed notification's encrypted payload.
	MaxPayload = 1 << 20

	// maxNotification leaves room in MaxPayload for age's header and
	// per-64-KiB tags (under 1 KiB at this size).
	maxNotification = MaxPayload - 4<<10
	// maxCert bounds certificate bytes; real ones are a few hundred.
	maxCert = 16 << 10
	// maxSealed bounds a whole encoded Sealed.
	maxSealed = MaxPayload + maxCert + 4<<10
	// maxRelease bounds an encoded Release (address, key, signature).
	maxRelease = 1 << 10
)

// Signature labels. Each ends in NUL so none is a prefix of another.
const (
	labelNotification = "epost/post-notification/v1\x00"
	labelSealed       = "epost/post-sealed/v1\x00"
	labelRelease      = "epost/post-release/v1\x00"
)

// Notification tells a recipient that a message waits for them: where its
// body is and how to open it. The sender's signature covers every field
// but Sig, including the full recipient list, so no recipient can pass it
// on to someone not on the list.
type Notification struct {
	_          struct{} `cbor:",toarray"`
	Version    uint16
	ID         [16]byte // random, unique per message: the recipient's dedup key
	Sender     string   // canonical address
	SenderCert []byte   // the sender's user certificate
	Recipients []string // every recipient, canonical, no duplicates
	Body       BodyRef
	Gateway    bool   // mail from the Internet, injected by a gateway user
	Sig        []byte // the sender's user signature
}

// notificationBody is what the sender signs: Notification without Sig.
type notificationBody struct {
	_          struct{} `cbor:",toarray"`
	Version    uint16
	ID         [16]byte
	Sender     string
	SenderCert []byte
	Recipients []string
	Body       BodyRef
	Gateway    bool
}

func (n *Notification) body() []byte {
	return wire.MustMarshal(notificationBody{
		Version: n.Version, ID: n.ID, Sender: n.Sender, SenderCert: n.SenderCert,
		Recipients: n.Recipients, Body: n.Body, Gateway: n.Gateway,
	})
}

// SignNotification makes a notification of body to recipients (which are
// canonicalised; an empty list, a duplicate, or more than MaxRecipients is
// refused) from the user with keys and cert, with an ID drawn from r.
// gateway marks mail injected from the Internet. Every recipient will see
// the whole list.
func SignNotification(r io.Reader, keys identity.UserKeys, cert *identity.UserCert, recipients []string, body BodyRef, gateway bool) (*Notification, error) {
	if cert == nil || !cert.Matches(keys) {
		return nil, fmt.Errorf("post: sign notification: %w", identity.ErrKeyMismatch)
	}
	rcpts, err := canonicalRecipients(recipients)
	if err != nil {
		return nil, fmt.Errorf("post: sign notification from %s: %w", cert.Address, err)
	}
	if err := body.check(); err != nil {
		return nil, fmt.Errorf("post: sign notification from %s: %w: %v", cert.Address, ErrMalformed, err)
	}
	n := &Notification{
		Version: Version, Sender: cert.Address, SenderCert: cert.Bytes(), Recipients: rcpts,
		Body: BodyRef{Chunks: slices.Clone(body.Chunks), Key: body.Key, Size: body.Size}, Gateway: gateway,
	}
	if _, err := io.ReadFull(r, n.ID[:]); err != nil {
		return nil, fmt.Errorf("post: sign notification from %s: read randomness: %w", cert.Address, err)
	}
	n.Sig = keys.Signing.Sign(labelNotification, n.body())
	// Refuse now what Seal could not fit, rather than once per recipient.
	if size := len(wire.MustMarshal(n)); size > maxNotification {
		return nil, fmt.Errorf("post: sign notification from %s: %w: %d bytes, at most %d", cert.Address, ErrMalformed, size, maxNotification)
	}
	return n, nil
}

// canonicalRecipients canonicalises a recipient list for signing.
func canonicalRecipients(list []string) ([]string, error) {
	if len(list) == 0 {
		return nil, fmt.Errorf("%w: no recipients", ErrMalformed)
	}
	if len(list) > MaxRecipients {
		return nil, fmt.Errorf("%w: %d recipients, at most %d", ErrMalformed, len(list), MaxRecipients)
	}
	out := make([]string, len(list))
	seen := make(map[string]bool, len(list))
	for i, a := range list {
		c, err := identity.CanonicalAddress(a)
		if err != nil {
			return nil, err
		}
		if seen[c] {
			return nil, fmt.Errorf("%w: recipient %s listed twice", ErrMalformed, c)
		}
		seen[c] = true
		out[i] = c
	}
	return out, nil
}

// check validates a decoded notification's shape (not its signature).
func (n *Notification) check() error {
	if n.Version != Version {
		return fmt.Errorf("%w: %w: notification version %d, this build reads %d", ErrMalformed, wire.ErrVersion, n.Version, Version)
	}
	if !isCanonical(n.Sender) {
		return fmt.Errorf("%w: sender %q is not a canonical address", ErrMalformed, n.Sender)
	}
	if len(n.SenderCert) == 0 || len(n.SenderCert) > maxCert {
		return fmt.Errorf("%w: sender certificate of %d bytes", ErrMalformed, len(n.SenderCert))
	}
	if len(n.Recipients) == 0 || len(n.Recipients) > MaxRecipients {
		return fmt.Errorf("%w: %d recipients, want 1..%d", ErrMalformed, len(n.Recipients), MaxRecipients)
	}
	seen := make(map[string]bool, len(n.Recipients))
	for _, a := range n.Recipients {
		if !isCanonical(a) || seen[a] {
			return fmt.Errorf("%w: recipient %q is not canonical or listed twice", ErrMalformed, a)
		}
		seen[a] = true
	}
	if err := n.Body.check(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(n.Sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature of %d bytes", ErrMalformed, len(n.Sig))
	}
	return nil
}

func isCanonical(a string) bool {
	c, err := identity.CanonicalAddress(a)
	return err == nil && c == a
}

// Sealed is a Notification as stored in a recipient's pending set: the
// notification encrypted to the recipient, and signed by the sending
// node, which is all a storing node can check.
type Sealed struct {
	_         struct{} `cbor:",toarray"`
	Version   uint16
	Recipient string    // canonical address; the set lives at id.ForUser(Recipient)
	Payload   []byte    // the encoded Notification, age-encrypted to the recipient
	Node      id.NodeID // the sending node
	NodeCert  []byte    // its certificate
	Sig       []byte    // the node's signature over Version, Recipient, Payload, Node
}

type sealedBody struct {
	_         struct{} `cbor:",toarray"`
	Version   uint16
	Recipient string
	Payload   []byte
	Node      id.NodeID
}

func (s *Sealed) body() []byte {
	return wire.MustMarshal(sealedBody{Version: s.Version, Recipient: s.Recipient, Payload: s.Payload, Node: s.Node})
}

// Seal encrypts n to the recipient certified by to (who must be in
// n.Recipients; the caller has verified to) and signs the result with the
// sending node's key. The age encryption draws its ephemeral key, file
// key and nonce from r, so the Sealed bytes, and its Key, are a function
// of r's output.
func Seal(r io.Reader, n *Notification, to *identity.UserCert, nodeKey identity.NodeKey, nodeCert *identity.NodeCert) (*Sealed, error) {
	if n == nil || to == nil || nodeCert == nil {
		return nil, errors.New("post: seal: nil notification or certificate")
	}
	if !nodeCert.Matches(nodeKey) {
		return nil, fmt.Errorf("post: seal to %s: node %w", to.Address, identity.ErrKeyMismatch)
	}
	if err := n.check(); err != nil {
		return nil, fmt.Errorf("post: seal to %s: %w", to.Address, err)
	}
	if !slices.Contains(n.Recipients, to.Address) {
		return nil, fmt.Errorf("post: seal to %s: %w: not in the notification's recipient list", to.Address, ErrNotForMe)
	}
	plain := wire.MustMarshal(n)
	if len(plain) > maxNotification {
		return nil, fmt.Errorf("post: seal to %s: %w: notification of %d bytes, at most %d", to.Address, ErrMalformed, len(plain), maxNotification)
	}
	payload, err := ageSeal(r, to.Sealing, plain)
	if err != nil {
		return nil, fmt.Errorf("post: seal to %s: %w", to.Address, err)
	}
	s := &Sealed{Version: Version, Recipient: to.Address, Payload: payload, Node: nodeCert.NodeID, NodeCert: nodeCert.Bytes()}
	s.Sig = nodeKey.Sign(labelSealed, s.body())
	return s, nil
}

// Encode returns the sealed notification's bytes, as stored.
func (s *Sealed) Encode() []byte { return wire.MustMarshal(s) }

// Key is SHA-256 of Encode(): the sealed notification's id as a member of
// the pending set, which a Release names.
func (s *Sealed) Key() object.Key { return object.ImmutableKey(s.Encode()) }

// DecodeSealed reads a sealed notification (unverified). It accepts only
// the canonical encoding, so Key is the hash of b itself.
func DecodeSealed(b []byte) (*Sealed, error) {
	if len(b) > maxSealed {
		return nil, fmt.Errorf("post: decode sealed: %w: %d bytes, at most %d", ErrMalformed, len(b), maxSealed)
	}
	var s Sealed
	if err := wire.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("post: decode sealed: %w: %w", ErrMalformed, err)
	}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("post: decode sealed: %w", err)
	}
	if !bytes.Equal(s.Encode(), b) {
		return nil, fmt.Errorf("post: decode sealed: %w: not the canonical encoding", ErrMalformed)
	}
	return &s, nil
}

// check validates a sealed notification's shape (not its signature).
func (s *Sealed) check() error {
	switch {
	case s.Version != Version:
		return fmt.Errorf("%w: %w: sealed version %d, this build reads %d", ErrMalformed, wire.ErrVersion, s.Version, Version)
	case !isCanonical(s.Recipient):
		return fmt.Errorf("%w: recipient %q is not a canonical address", ErrMalformed, s.Recipient)
	case len(s.Payload) == 0 || len(s.Payload) > MaxPayload:
		return fmt.Errorf("%w: payload of %d bytes, want 1..%d", ErrMalformed, len(s.Payload), MaxPayload)
	case len(s.NodeCert) == 0 || len(s.NodeCert) > maxCert:
		return fmt.Errorf("%w: node certificate of %d bytes", ErrMalformed, len(s.NodeCert))
	case len(s.Sig) != ed25519.SignatureSize:
		return fmt.Errorf("%w: signature of %d bytes", ErrMalformed, len(s.Sig))
	}
	return nil
}

// VerifyNode checks what a storing node can without the recipient's
// keys: the shape and bounds, the recipient address is canonical, the
// sending node's certificate verifies against v and names s.Node, and the
// node's signature. Bad shape wraps ErrMalformed; a bad certificate or
// signature ErrForged.
func (s *Sealed) VerifyNode(v *identity.Verifier) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("post: verify sealed: %w", err)
	}
	cert, err := v.VerifyNode(s.NodeCert)
	if err != nil {
		return fmt.Errorf("post: verify sealed for %s: %w: %w", s.Recipient, ErrForged, err)
	}
	if cert.NodeID != s.Node {
		return fmt.Errorf("post: verify sealed for %s: %w: certificate is for node %s, not %s", s.Recipient, ErrForged, cert.NodeID, s.Node)
	}
	if !cert.Key.Verify(labelSealed, s.body(), s.Sig) {
		return fmt.Errorf("post: verify sealed for %s: %w: bad node signature by %s", s.Recipient, ErrForged, s.Node)
	}
	return nil
}

// Open does everything a recipient must before believing a notification:
// VerifyNode, decrypt with keys' sealing key (current or retired),
// decode, verify the sender's certificate against v and the sender's
// signature, and check that keys' address is both s.Recipient and in the
// signed recipient list (so a recipient who re-seals someone's
// notification to a third party is caught). Errors wrap ErrMalformed,
// ErrForged or ErrNotForMe.
//
// Whether a gateway notification's sender is really a gateway user is the
// caller's policy; Open only proves who signed it.
func (s *Sealed) Open(keys identity.UserKeys, v *identity.Verifier) (*Notification, error) {
	if err := s.VerifyNode(v); err != nil {
		return nil, err
	}
	if s.Recipient != keys.Address {
		return nil, fmt.Errorf("post: open: %w: sealed for %s, opening as %s", ErrNotForMe, s.Recipient, keys.Address)
	}
	// A sender may still hold the certificate from before a rotation, so
	// every sealing key the user has held is tried.
	var ids []age.Identity
	for _, g := range keys.Generations() {
		if g.Sealing.IsZero() {
			return nil, fmt.Errorf("post: open for %s: no sealing key", keys.Address)
		}
		ids = append(ids, g.Sealing.AgeIdentity())
	}
	plain, err := ageOpen(s.Payload, ids...)
	if err != nil {
		return nil, fmt.Errorf("post: open for %s: %w", keys.Address, err)
	}
	var n Notification
	if err := wire.Unmarshal(plain, &n); err != nil {
		return nil, fmt.Errorf("post: open for %s: %w: %w", keys.Address, ErrMalformed, err)
	}
	if err := n.check(); err != nil {
		return nil, fmt.Errorf("post: open for %s: %w", keys.Address, err)
	}
	if !bytes.Equal(wire.MustMarshal(&n), plain) {
		return nil, fmt.Errorf("post: open for %s: %w: notification not in canonical encoding", keys.Address, ErrMalformed)
	}
	cert, err := v.VerifyUser(n.SenderCert, n.Sender)
	if err != nil {
		return nil, fmt.Errorf("post: open for %s: %w: sender: %w", keys.Address, ErrForged, err)
	}
	if !cert.Signing.Verify(labelNotification, n.body(), n.Sig) {
		return nil, fmt.Errorf("post: open for %s: %w: bad signature by sender %s", keys.Address, ErrForged, n.Sender)
	}
	if !slices.Contains(n.Recipients, keys.Address) {
		return nil, fmt.Errorf("post: open for %s: %w: not in %s's recipient list (re-sealed by node %s?)", keys.Address, ErrNotForMe, n.Sender, s.Node)
	}
	return &n, nil
}

// Release is a recipient's receipt for one pending notification: the
// only thing that lets a storing node drop it.
type Release struct {
	_         struct{} `cbor:",toarray"`
	Version   uint16
	Recipient string     // canonical address of the recipient
	Entry     object.Key // the released Sealed's Key
	Sig       []byte     // the recipient's user signature
}

type releaseBody struct {
	_         struct{} `cbor:",toarray"`
	Version   uint16
	Recipient string
	Entry     object.Key
}

func (r *Release) body() []byte {
	return wire.MustMarshal(releaseBody{Version: r.Version, Recipient: r.Recipient, Entry: r.Entry})
}

// SignRelease releases the pending entry with key entry, as the user with
// keys. It panics on zero keys, like identity.SigningKey.Sign.
func SignRelease(keys identity.UserKeys, entry object.Key) *Release {
	r := &Release{Version: Version, Recipient: keys.Address, Entry: entry}
	r.Sig = keys.Signing.Sign(labelRelease, r.body())
	return r
}

// Verify checks that r is signed by the user cert certifies and names
// that user. cert must already be verified (identity.Verifier.VerifyUser)
// and be the certificate of the released entry's recipient: a release
// only proves what its signer wants, so a storing node must also match
// r.Entry and r.Recipient to the entry; Sealed.VerifyRelease does all of
// it.
func (r *Release) Verify(cert *identity.UserCert) error {
	switch {
	case r.Version != Version:
		return fmt.Errorf("post: verify release: %w: %w: version %d", ErrMalformed, wire.ErrVersion, r.Version)
	case cert == nil || cert.Address != r.Recipient:
		return fmt.Errorf("post: verify release by %s: %w: certificate is for another user", r.Recipient, ErrForged)
	case !cert.Signing.Verify(labelRelease, r.body(), r.Sig):
		return fmt.Errorf("post: verify release by %s of %s: %w: bad signature", r.Recipient, r.Entry.Short(), ErrForged)
	}
	return nil
}

// VerifyRelease is the storing node's whole check before dropping s: rel
// names s, is by s's recipient, and carries that recipient's signature
// under recipientCert, which is verified against v.
func (s *Sealed) VerifyRelease(rel *Release, recipientCert []byte, v *identity.Verifier) error {
	if key := s.Key(); rel.Entry != key {
		return fmt.Errorf("post: release of %s: %w: names entry %s", key.Short(), ErrNotForMe, rel.Entry.Short())
	}
	if rel.Recipient != s.Recipient {
		return fmt.Errorf("post: release of %s: %w: by %s, entry is for %s", rel.Entry.Short(), ErrNotForMe, rel.Recipient, s.Recipient)
	}
	cert, err := v.VerifyUser(recipientCert, s.Recipient)
	if err != nil {
		return fmt.Errorf("post: release of %s: %w: %w", rel.Entry.Short(), ErrForged, err)
	}
	return rel.Verify(cert)
}

// Encode returns the release's bytes.
func (r *Release) Encode() []byte { return wire.MustMarshal(r) }

// DecodeRelease reads a release (unverified), accepting only its
// canonical encoding.
func DecodeRelease(b []byte) (*Release, error) {
	if len(b) > maxRelease {
		return nil, fmt.Errorf("post: decode release: %w: %d bytes, at most %d", ErrMalformed, len(b), maxRelease)
	}
	var r Release
	if err := wire.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("post: decode release: %w: %w", ErrMalformed, err)
	}
	switch {
	case r.Version != Version:
		return nil, fmt.Errorf("post: decode release: %w: %w: version %d", ErrMalformed, wire.ErrVersion, r.Version)
	case !isCanonical(r.Recipient):
		return nil, fmt.Errorf("post: decode release: %w: recipient %q is not a canonical address", ErrMalformed, r.Recipient)
	case len(r.Sig) != ed25519.SignatureSize:
		return nil, fmt.Errorf("post: decode release: %w: signature of %d bytes", ErrMalformed, len(r.Sig))
	case !bytes.Equal(r.Encode(), b):
		return nil, fmt.Errorf("post: decode release: %w: not the canonical encoding", ErrMalformed)
	}
	return &r, nil
}

// The age v1 format (age-encryption.org/v1, C2SP), X25519 recipients
// only. age's own Encrypt draws the file key, nonce and ephemeral key from
// crypto/rand; a deterministic core must draw them from its caller's
// reader, so the encrypting side is written here from the spec. Opening
// uses age itself, and the tests open every payload with age.Decrypt.
const (
	ageIntro       = "age-encryption.org/v1\n"
	ageX25519Label = "age-encryption.org/v1/X25519"
	ageFileKeySize = 16
	ageNonceSize   = 16
	ageChunkSize   = 64 << 10
)

var ageB64 = base64.RawStdEncoding

// ageSeal encrypts plain to rcpt as an age file with one X25519 stanza.
func ageSeal(r io.Reader, rcpt identity.SealingRecipient, plain []byte) ([]byte, error) {
	theirs, err := x25519Point(rcpt)
	if err != nil {
		return nil, err
	}
	var rnd [32 + ageFileKeySize + ageNonceSize]byte
	if _, err := io.ReadFull(r, rnd[:]); err != nil {
		return nil, fmt.Errorf("read randomness: %w", err)
	}
	ephemeral, fileKey, nonce := rnd[:32], rnd[32:32+ageFileKeySize], rnd[32+ageFileKeySize:]

	// The recipient stanza: the file key wrapped under
	// HKDF(X25519(ephemeral, theirs), ours || theirs).
	eph, err := ecdh.X25519().NewPrivateKey(ephemeral)
	if err != nil {
		return nil, err
	}
	pub, err := ecdh.X25519().NewPublicKey(theirs)
	if err != nil {
		return nil, err
	}
	shared, err := eph.ECDH(pub) // refuses low-order points
	if err != nil {
		return nil, fmt.Errorf("sealing recipient: %w", err)
	}
	ours := eph.PublicKey().Bytes()
	wrapKey, err := hkdf.Key(sha256.New, shared, append(slices.Clone(ours), theirs...), ageX25519Label, chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	// A zero nonce is what the spec prescribes: the wrap key is used once.
	wrapped := newAEAD(wrapKey).Seal(nil, make([]byte, chacha20poly1305.NonceSize), fileKey, nil)

	// The header. Both base64 lines are 43 characters, under the 64-column
	// wrap, so each stanza line is a single line.
	var out bytes.Buffer
	out.WriteString(ageIntro)
	out.WriteString("-> X25519 " + ageB64.EncodeToString(ours) + "\n")
	out.WriteString(ageB64.EncodeToString(wrapped) + "\n")
	out.WriteString("---")
	macKey, err := hkdf.Key(sha256.New, fileKey, nil, "header", 32)
	if err != nil {
		return nil, err
	}
	mac := hmac.New(sha256.New, macKey)
	mac.Write(out.Bytes())
	out.WriteString(" " + ageB64.EncodeToString(mac.Sum(nil)) + "\n")

	// The payload: STREAM over 64 KiB chunks, the last one flagged in the
	// nonce's final byte. Only an empty payload has an empty last chunk.
	out.Write(nonce)
	streamKey, err := hkdf.Key(sha256.New, fileKey, nonce, "payload", chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	aead := newAEAD(streamKey)
	n := max(1, (len(plain)+ageChunkSize-1)/ageChunkSize)
	for i := range n {
		var cn [chacha20poly1305.NonceSize]byte
		binary.BigEndian.PutUint64(cn[3:11], uint64(i))
		if i == n-1 {
			cn[11] = 1
		}
		part := plain[i*ageChunkSize : min((i+1)*ageChunkSize, len(plain))]
		out.Write(aead.Seal(nil, cn[:], part, nil))
	}
	return out.Bytes(), nil
}

// ageOpen decrypts an age payload with id, reading at most MaxPayload
// bytes of plaintext.
func ageOpen(payload []byte, ids ...age.Identity) ([]byte, error) {
	rd, err := age.Decrypt(bytes.NewReader(payload), ids...)
	if err != nil {
		if _, ok := errors.AsType[*age.NoIdentityMatchError](err); ok {
			return nil, fmt.Errorf("%w: payload is sealed to another key", ErrNotForMe)
		}
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	plain, err := io.ReadAll(io.LimitReader(rd, MaxPayload+1))
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if len(plain) > MaxPayload {
		return nil, fmt.Errorf("%w: payload decrypts to more than %d bytes", ErrMalformed, MaxPayload)
	}
	return plain, nil
}

// x25519Point returns the raw public key inside a sealing recipient's
// bech32 "age1..." form. SealingRecipient is validated (checksum and all)
// by age when it is made, so only the data part is decoded here.
func x25519Point(rcpt identity.SealingRecipient) ([]byte, error) {
	const charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
	s := rcpt.String()
	if !strings.HasPrefix(s, "age1") || len(s) < 4+6 {
		return nil, fmt.Errorf("sealing recipient %q is not an age X25519 recipient", s)
	}
	data := s[4 : len(s)-6] // without the checksum
	var out []byte
	acc, bits := uint32(0), 0
	for i := 0; i < len(data); i++ {
		v := strings.IndexByte(charset, data[i])
		if v < 0 {
			return nil, fmt.Errorf("sealing recipient %q: bad character", s)
		}
		acc = acc<<5 | uint32(v)
		bits += 5
		if bits >= 8 {
			bits -= 8
			out = append(out, byte(acc>>bits))
		}
	}
	if len(out) != 32 || bits >= 5 || acc&(1<<bits-1) != 0 {
		return nil, fmt.Errorf("sealing recipient %q: not a 32-byte key", s)
	}
	return out, nil
}
