package glacier

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/wire"
)

// MaxBundleBytes bounds an encoded bundle: objects are aggregated up to
// this size before coding, so per-fragment metadata stays small beside
// the shard (see the package documentation).
const MaxBundleBytes = 2 << 20

// MaxBundleObjects bounds the objects in one bundle.
const MaxBundleObjects = 1000

// maxProof bounds a Merkle proof: ceil(log2 256) = 8 for any valid code.
const maxProof = 8

// labelManifest separates manifest signatures from every other thing a
// user key signs; the NUL keeps it from being a prefix of another label.
const labelManifest = "epost glacier manifest v1\x00"

// bundleKeyPrefix separates bundle keys from other hashed names.
const bundleKeyPrefix = "epost glacier bundle"

// Object is one archived object: opaque ciphertext, encrypted by the
// layers above, with the PAST key and kind to restore it under.
type Object struct {
	_    struct{} `cbor:",toarray"`
	Key  [32]byte // the object's PAST key (a store.Key converts to it)
	Kind uint8    // the PAST kind it was stored under (opaque here)
	Data []byte
}

// Bundle is the unit that is erasure coded: one link of an owner's chain
// of bundles.
type Bundle struct {
	_       struct{} `cbor:",toarray"`
	Owner   id.ID    // the owner's user id
	Seq     uint64   // position in the owner's chain, from 0
	Objects []Object
}

// Encode returns the bundle's canonical encoding, refusing one that is
// over MaxBundleBytes or MaxBundleObjects.
func (b *Bundle) Encode() ([]byte, error) {
	if len(b.Objects) > MaxBundleObjects {
		return nil, fmt.Errorf("%w: bundle of %d objects (max %d)", ErrMalformed, len(b.Objects), MaxBundleObjects)
	}
	out, err := wire.Marshal(b)
	if err != nil {
		return nil, err
	}
	if len(out) > MaxBundleBytes {
		return nil, fmt.Errorf("%w: bundle of %d bytes (max %d)", ErrMalformed, len(out), MaxBundleBytes)
	}
	return out, nil
}

// DecodeBundle decodes a bundle strictly: within the bounds Encode keeps,
// and in exactly the encoding Encode gives, so a bundle has one encoding
// and one hash.
func DecodeBundle(b []byte) (*Bundle, error) {
	if len(b) > MaxBundleBytes {
		return nil, fmt.Errorf("%w: bundle of %d bytes (max %d)", ErrMalformed, len(b), MaxBundleBytes)
	}
	var out Bundle
	if err := wire.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("glacier: bundle: %w", err)
	}
	again, err := out.Encode()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, b) {
		return nil, fmt.Errorf("%w: bundle not in canonical encoding", ErrMalformed)
	}
	return &out, nil
}

// Manifest describes one coded bundle and names its fragments by their
// Merkle root. The owner's user key signs it.
type Manifest struct {
	_      struct{} `cbor:",toarray"`
	Owner  id.ID
	Seq    uint64
	Prev   Hash // ManifestHash of the owner's previous bundle (zero for Seq 0): the chain
	Code   Code
	Size   uint64 // encoded bundle bytes before padding
	Bundle Hash   // SHA-256 of the encoded bundle (checked after decoding)
	Root   Hash   // Merkle root over LeafHash(i, shard_i)
	// Supersedes lists the earlier bundles of the chain whose objects
	// this one holds (a compacted bundle): their fragments may be freed
	// once this bundle is placed, and recovery skips them.
	Supersedes []SeqRange
	Sig        []byte // owner's signature over manifestBody
}

// SeqRange is the chain positions [From, To).
type SeqRange struct {
	_        struct{} `cbor:",toarray"`
	From, To uint64
}

// maxSupersedes bounds a manifest's ranges (it rides in every fragment).
const maxSupersedes = 64

// Covers reports whether m supersedes bundle seq.
func (m *Manifest) Covers(seq uint64) bool {
	for _, r := range m.Supersedes {
		if seq >= r.From && seq < r.To {
			return true
		}
	}
	return false
}

// manifestBody is what a manifest's signature covers: every field but
// Sig. A manifest that supersedes nothing is encoded, signed and hashed
// exactly as before the field existed (manifestBodyV1, manifestV1), so
// the archives written then still verify and their chains still link.
type manifestBody struct {
	_          struct{} `cbor:",toarray"`
	Owner      id.ID
	Seq        uint64
	Prev       Hash
	Code       Code
	Size       uint64
	Bundle     Hash
	Root       Hash
	Supersedes []SeqRange
}

type manifestBodyV1 struct {
	_      struct{} `cbor:",toarray"`
	Owner  id.ID
	Seq    uint64
	Prev   Hash
	Code   Code
	Size   uint64
	Bundle Hash
	Root   Hash
}

type manifestV1 struct {
	_      struct{} `cbor:",toarray"`
	Owner  id.ID
	Seq    uint64
	Prev   Hash
	Code   Code
	Size   uint64
	Bundle Hash
	Root   Hash
	Sig    []byte
}

type manifestV2 struct {
	_          struct{} `cbor:",toarray"`
	Owner      id.ID
	Seq        uint64
	Prev       Hash
	Code       Code
	Size       uint64
	Bundle     Hash
	Root       Hash
	Supersedes []SeqRange
	Sig        []byte
}

func (m *Manifest) body() []byte {
	if len(m.Supersedes) == 0 {
		return wire.MustMarshal(manifestBodyV1{Owner: m.Owner, Seq: m.Seq, Prev: m.Prev, Code: m.Code,
			Size: m.Size, Bundle: m.Bundle, Root: m.Root})
	}
	return wire.MustMarshal(manifestBody{Owner: m.Owner, Seq: m.Seq, Prev: m.Prev, Code: m.Code,
		Size: m.Size, Bundle: m.Bundle, Root: m.Root, Supersedes: m.Supersedes})
}

// MarshalCBOR encodes a manifest that supersedes nothing as an 8-element
// array (the original format), one that does as a 9-element array.
func (m Manifest) MarshalCBOR() ([]byte, error) {
	if len(m.Supersedes) == 0 {
		return wire.Marshal(manifestV1{Owner: m.Owner, Seq: m.Seq, Prev: m.Prev, Code: m.Code,
			Size: m.Size, Bundle: m.Bundle, Root: m.Root, Sig: m.Sig})
	}
	return wire.Marshal(manifestV2{Owner: m.Owner, Seq: m.Seq, Prev: m.Prev, Code: m.Code,
		Size: m.Size, Bundle: m.Bundle, Root: m.Root, Supersedes: m.Supersedes, Sig: m.Sig})
}

// UnmarshalCBOR decodes either format. A 9-element manifest must name
// something it supersedes, so every manifest has one encoding.
func (m *Manifest) UnmarshalCBOR(b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty manifest", ErrMalformed)
	}
	switch b[0] {
	case 0x88: // array of 8
		var v manifestV1
		if err := wire.Unmarshal(b, &v); err != nil {
			return err
		}
		*m = Manifest{Owner: v.Owner, Seq: v.Seq, Prev: v.Prev, Code: v.Code, Size: v.Size, Bundle: v.Bundle, Root: v.Root, Sig: v.Sig}
	case 0x89: // array of 9
		var v manifestV2
		if err := wire.Unmarshal(b, &v); err != nil {
			return err
		}
		if len(v.Supersedes) == 0 {
			return fmt.Errorf("%w: manifest with an empty list of superseded bundles", ErrMalformed)
		}
		*m = Manifest{Owner: v.Owner, Seq: v.Seq, Prev: v.Prev, Code: v.Code, Size: v.Size, Bundle: v.Bundle, Root: v.Root, Supersedes: v.Supersedes, Sig: v.Sig}
	default:
		return fmt.Errorf("%w: manifest is not an array of 8 or 9", ErrMalformed)
	}
	return nil
}

// Sign sets m.Sig to k's signature over every other field.
func (m *Manifest) Sign(k identity.SigningKey) { m.Sig = k.Sign(labelManifest, m.body()) }

// Verify checks m.Sig against the owner's verifying key.
func (m *Manifest) Verify(pub identity.VerifyingKey) error {
	if !pub.Verify(labelManifest, m.body(), m.Sig) {
		return fmt.Errorf("%w: manifest %s/%d: bad signature", ErrMalformed, m.Owner.Short(), m.Seq)
	}
	return nil
}

// Hash is SHA-256 of the full encoding, signature included: the name the
// next manifest's Prev gives this one.
func (m *Manifest) Hash() Hash { return sha256.Sum256(wire.MustMarshal(m)) }

// check validates the fields that bound the work a fragment may cause.
func (m *Manifest) check() error {
	if err := m.Code.Validate(); err != nil {
		return err
	}
	if m.Size > MaxBundleBytes {
		return fmt.Errorf("%w: manifest size %d (max %d)", ErrMalformed, m.Size, MaxBundleBytes)
	}
	if len(m.Supersedes) > maxSupersedes {
		return fmt.Errorf("%w: manifest supersedes %d ranges (max %d)", ErrMalformed, len(m.Supersedes), maxSupersedes)
	}
	for _, r := range m.Supersedes {
		if r.From >= r.To || r.To > m.Seq {
			return fmt.Errorf("%w: manifest %d supersedes [%d, %d)", ErrMalformed, m.Seq, r.From, r.To)
		}
	}
	return nil
}

// BundleKey is where bundle seq of owner is placed:
// SHA-256("epost glacier bundle" || owner || seq), as a ring position.
// Recovery finds every bundle of a user from the user id alone.
func BundleKey(owner id.ID, seq uint64) id.ID {
	var b [len(bundleKeyPrefix) + id.Bytes + 8]byte
	n := copy(b[:], bundleKeyPrefix)
	n += copy(b[n:], owner[:])
	binary.BigEndian.PutUint64(b[n:], seq)
	return id.FromHash(sha256.Sum256(b[:]))
}

// Fragment is what a holder stores for fragment Index of a bundle.
type Fragment struct {
	_        struct{} `cbor:",toarray"`
	Manifest Manifest
	Index    int
	Proof    []Hash
	Data     []byte
}

// Encode returns the fragment's canonical encoding.
func (f *Fragment) Encode() ([]byte, error) { return wire.Marshal(f) }

// DecodeFragment decodes a fragment strictly (one encoding per fragment)
// and checks that its sizes are within bounds. It does not check the
// proof; see Check.
func DecodeFragment(b []byte) (*Fragment, error) {
	if len(b) > 2*MaxBundleBytes {
		return nil, fmt.Errorf("%w: fragment of %d bytes", ErrMalformed, len(b))
	}
	var f Fragment
	if err := wire.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("glacier: fragment: %w", err)
	}
	if err := f.Manifest.check(); err != nil {
		return nil, err
	}
	if len(f.Proof) > maxProof {
		return nil, fmt.Errorf("%w: proof of %d hashes", ErrMalformed, len(f.Proof))
	}
	again, err := f.Encode()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, b) {
		return nil, fmt.Errorf("%w: fragment not in canonical encoding", ErrMalformed)
	}
	return &f, nil
}

// Check verifies the fragment against its manifest: the index is in
// range, the shard has the length Code and Size give, and the proof leads
// from the shard to the manifest's root. The signature is the caller's
// to check, with the owner's key.
func (f *Fragment) Check() error {
	m := &f.Manifest
	if err := m.check(); err != nil {
		return err
	}
	if f.Index < 0 || f.Index >= m.Code.N {
		return fmt.Errorf("%w: fragment index %d for code %s", ErrMalformed, f.Index, m.Code)
	}
	if want := m.Code.ShardLen(int(m.Size)); len(f.Data) != want {
		return fmt.Errorf("%w: fragment %d has %d bytes, want %d", ErrMalformed, f.Index, len(f.Data), want)
	}
	if !VerifyProof(m.Root, m.Code.N, f.Index, LeafHash(f.Index, f.Data), f.Proof) {
		return fmt.Errorf("%w: fragment %d: proof does not match root", ErrMalformed, f.Index)
	}
	return nil
}

// FragmentBytes is the encoded size of the largest fragment of a bundle
// of size bytes under code c: shard plus manifest and the longest proof.
func FragmentBytes(c Code, size int) int {
	plen := 0
	for n := 1; n < c.N; n *= 2 {
		plen++
	}
	f := Fragment{
		Manifest: Manifest{Code: c, Size: uint64(size), Seq: 1 << 40, Sig: make([]byte, 64)},
		Index:    c.N - 1,
		Proof:    make([]Hash, plen),
		Data:     make([]byte, c.ShardLen(size)),
	}
	b, err := f.Encode()
	if err != nil {
		return 0
	}
	return len(b)
}

// MakeFragments encodes bundle b into its N fragments under code c, with
// proofs and a manifest chained to prev and signed with k.
func MakeFragments(c Code, b *Bundle, prev Hash, k identity.SigningKey) (*Manifest, []*Fragment, error) {
	return makeFragments(c, b, prev, nil, k)
}

func makeFragments(c Code, b *Bundle, prev Hash, sup []SeqRange, k identity.SigningKey) (*Manifest, []*Fragment, error) {
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	enc, err := b.Encode()
	if err != nil {
		return nil, nil, err
	}
	shards, err := Encode(c, enc)
	if err != nil {
		return nil, nil, err
	}
	leaves := make([]Hash, c.N)
	for i, s := range shards {
		leaves[i] = LeafHash(i, s)
	}
	root, proofs := merkleAll(leaves)
	m := &Manifest{Owner: b.Owner, Seq: b.Seq, Prev: prev, Code: c, Size: uint64(len(enc)),
		Bundle: sha256.Sum256(enc), Root: root, Supersedes: sup}
	if err := m.check(); err != nil {
		return nil, nil, err
	}
	m.Sign(k)
	frags := make([]*Fragment, c.N)
	for i := range frags {
		frags[i] = &Fragment{Manifest: *m, Index: i, Proof: proofs[i], Data: shards[i]}
	}
	return m, frags, nil
}

// Rebuild decodes a bundle from at least M fragments of one manifest
// (nil entries and repeated indices are ignored). Every fragment is
// checked, and the decoded bytes must hash to the manifest's Bundle and
// name the manifest's owner and sequence number.
func Rebuild(frags []*Fragment) (*Bundle, error) {
	var m *Manifest
	var mh Hash
	var shards [][]byte
	for _, f := range frags {
		if f == nil {
			continue
		}
		if m == nil {
			if err := f.Check(); err != nil {
				return nil, err
			}
			m, mh = &f.Manifest, f.Manifest.Hash()
			shards = make([][]byte, m.Code.N)
		} else if f.Manifest.Hash() != mh {
			return nil, fmt.Errorf("%w: fragments of different manifests", ErrMalformed)
		} else if err := f.Check(); err != nil {
			return nil, err
		}
		shards[f.Index] = f.Data
	}
	if m == nil {
		return nil, fmt.Errorf("%w: no fragments", ErrTooFew)
	}
	data, err := Decode(m.Code, int(m.Size), shards)
	if err != nil {
		return nil, err
	}
	if sha256.Sum256(data) != m.Bundle {
		return nil, fmt.Errorf("%w: decoded bundle does not match manifest hash", ErrMalformed)
	}
	b, err := DecodeBundle(data)
	if err != nil {
		return nil, err
	}
	if b.Owner != m.Owner || b.Seq != m.Seq {
		return nil, fmt.Errorf("%w: bundle %s/%d under manifest %s/%d", ErrMalformed, b.Owner.Short(), b.Seq, m.Owner.Short(), m.Seq)
	}
	return b, nil
}
