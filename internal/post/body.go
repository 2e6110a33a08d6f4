package post

import (
	"bytes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/epost-mail/epost/internal/store/object"
)

// Message bodies (DESIGN.md section 6, "Body"). A body is encrypted once,
// split into chunks, and each sealed chunk is an immutable PAST object
// named by its SHA-256. The BodyRef (chunk keys, content key, size)
// travels only inside notifications, sealed to each recipient.

// ChunkSize is the default largest plaintext chunk of a body: 1 MiB keeps
// each sealed chunk far below wire.MaxMessage and small enough to
// replicate and erasure-code without holding a whole large message.
const ChunkSize = 1 << 20

// Labels of body encryption. Each ends in NUL so none is a prefix of
// another.
const (
	labelConvergent = "epost/post-convergent/v1\x00"
	labelBodyChunk  = "epost/post-body/v1\x00"
)

// ContentKey is the ChaCha20-Poly1305 key of one message body. A key
// encrypts exactly one message (or, when convergent, only identical
// copies of one message), which is what makes counter nonces safe.
type ContentKey [chacha20poly1305.KeySize]byte

// NewContentKey draws a random key from r: for a member's mail, whose
// content must not be confirmable by someone who guesses it.
func NewContentKey(r io.Reader) (ContentKey, error) {
	var k ContentKey
	if _, err := io.ReadFull(r, k[:]); err != nil {
		return ContentKey{}, fmt.Errorf("post: new content key: read randomness: %w", err)
	}
	return k, nil
}

// ConvergentKey derives the key from the content itself, for mail a
// gateway injects from the Internet: identical copies (the same spam to
// many members) encrypt to identical chunks and are stored once. The cost
// is that anyone who can guess the whole content can confirm the guess,
// which is why members' own mail uses NewContentKey.
func ConvergentKey(content []byte) ContentKey {
	h := sha256.New()
	h.Write([]byte(labelConvergent))
	h.Write(content)
	return ContentKey(h.Sum(nil))
}

// BodyRef is everything needed to fetch and open a body: the PAST key of
// each sealed chunk in order, the content key, and the plaintext size.
// It is secret (it holds the key) and travels only inside a sealed
// Notification.
type BodyRef struct {
	_      struct{}     `cbor:",toarray"`
	Chunks []object.Key // SHA-256 of each sealed chunk: its PAST key
	Key    ContentKey
	Size   int64 // plaintext bytes
}

// check validates a ref's shape, before anything is fetched for it.
func (r BodyRef) check() error {
	switch {
	case len(r.Chunks) == 0:
		return fmt.Errorf("body ref has no chunks")
	case r.Size < 0:
		return fmt.Errorf("body ref has negative size %d", r.Size)
	}
	return nil
}

// SealBody encrypts plaintext under key in chunks of at most chunkSize
// plaintext bytes (ChunkSize if chunkSize <= 0) and returns the sealed
// chunks, to insert into PAST, and the ref that names and opens them.
// There is always at least one chunk, so an empty body still has a key.
//
// The output is a function of key and plaintext alone: that is what lets
// convergent encryption store identical mail once.
func SealBody(key ContentKey, plaintext []byte, chunkSize int) (chunks [][]byte, ref BodyRef) {
	if chunkSize <= 0 {
		chunkSize = ChunkSize
	}
	n := max(1, (len(plaintext)+chunkSize-1)/chunkSize)
	aead := newAEAD(key[:])
	chunks = make([][]byte, n)
	ref = BodyRef{Chunks: make([]object.Key, n), Key: key, Size: int64(len(plaintext))}
	for i := range n {
		part := plaintext[min(i*chunkSize, len(plaintext)):min((i+1)*chunkSize, len(plaintext))]
		chunks[i] = aead.Seal(nil, chunkNonce(i), part, chunkAD(i, n))
		ref.Chunks[i] = object.ImmutableKey(chunks[i])
	}
	return chunks, ref
}

// OpenBody checks that chunks are exactly the ones ref names, in order,
// decrypts them and checks the total size. Every failure wraps
// ErrTampered: whoever supplied the chunks or the ref altered them.
func OpenBody(ref BodyRef, chunks [][]byte) ([]byte, error) {
	if err := ref.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTampered, err)
	}
	if len(chunks) != len(ref.Chunks) {
		return nil, fmt.Errorf("%w: %d chunks, ref names %d", ErrTampered, len(chunks), len(ref.Chunks))
	}
	var total int64
	for i, c := range chunks {
		if object.ImmutableKey(c) != ref.Chunks[i] {
			return nil, fmt.Errorf("%w: chunk %d does not hash to %s", ErrTampered, i, ref.Chunks[i].Short())
		}
		if len(c) < chacha20poly1305.Overhead {
			return nil, fmt.Errorf("%w: chunk %d of %d bytes is shorter than its tag", ErrTampered, i, len(c))
		}
		total += int64(len(c) - chacha20poly1305.Overhead)
	}
	// Hash-checked chunks can still disagree with a (signed but careless)
	// ref's size; refuse before allocating for it.
	if total != ref.Size {
		return nil, fmt.Errorf("%w: chunks hold %d plaintext bytes, ref says %d", ErrTampered, total, ref.Size)
	}
	aead := newAEAD(ref.Key[:])
	out := bytes.NewBuffer(make([]byte, 0, total))
	for i, c := range chunks {
		p, err := aead.Open(nil, chunkNonce(i), c, chunkAD(i, len(chunks)))
		if err != nil {
			return nil, fmt.Errorf("%w: chunk %d of %d: %v", ErrTampered, i, len(chunks), err)
		}
		out.Write(p)
	}
	return out.Bytes(), nil
}

// newAEAD returns ChaCha20-Poly1305 under a 32-byte key.
func newAEAD(key []byte) cipher.AEAD {
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		panic("post: chacha20poly1305 with a 32-byte key: " + err.Error()) // cannot happen
	}
	return aead
}

// chunkNonce is the chunk index: a content key encrypts one message, so
// (key, index) never repeats with different plaintext.
func chunkNonce(i int) []byte {
	n := make([]byte, chacha20poly1305.NonceSize)
	binary.BigEndian.PutUint64(n[4:], uint64(i))
	return n
}

// chunkAD binds a chunk to its position and the chunk count, so chunks
// cannot be reordered, dropped from the end, or moved between messages of
// different lengths under the same key.
func chunkAD(i, n int) []byte {
	ad := make([]byte, 0, len(labelBodyChunk)+16)
	ad = append(ad, labelBodyChunk...)
	ad = binary.BigEndian.AppendUint64(ad, uint64(i))
	return binary.BigEndian.AppendUint64(ad, uint64(n))
}
