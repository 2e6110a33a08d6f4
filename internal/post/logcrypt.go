package post

import (
	"crypto/cipher"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/epost-mail/epost/internal/identity"
)

// Folder-log encryption (DESIGN.md section 6, "Folders are logs"). Each
// log entry is encrypted under the owner's LogKey before it is stored as
// an immutable object; only the owner ever reads it.

const (
	// labelLogKey names the log key among the secrets derived from a
	// user's keys.
	labelLogKey = "epost/post-log/v1"
	// labelLogEntry is the additional data of every entry, so a log key
	// opens nothing else even if it were ever reused.
	labelLogEntry = "epost/post-log-entry/v1\x00"
)

// LogKey is the XChaCha20-Poly1305 key of a user's folder log.
type LogKey [chacha20poly1305.KeySize]byte

// DeriveLogKey returns the user's log key, derived from the user's keys
// alone, so a user who recovers their keys from the key backup can read
// their folders again with nothing else.
func DeriveLogKey(keys identity.UserKeys) LogKey {
	return LogKey(keys.DeriveSecret(labelLogKey))
}

// DeriveLogKeys returns the log key of every key pair the user has held,
// current first (identity.UserKeys.Generations): entries written before a
// rotation stay sealed under the key of their time, and are opened with
// OpenEntryAny.
func DeriveLogKeys(keys identity.UserKeys) []LogKey {
	var ks []LogKey
	for _, g := range keys.Generations() {
		ks = append(ks, DeriveLogKey(g))
	}
	return ks
}

// SealEntry encrypts one log entry under k with a random 24-byte nonce
// from r, prepended to the ciphertext. One key seals every entry a user
// ever writes, so nonces must be random, and XChaCha20's 192-bit nonces
// make collisions negligible. r must not fail (crypto/rand.Reader and
// env.Rand never do); SealEntry panics if it does, since sealing with a
// short nonce would be unsafe.
func SealEntry(r io.Reader, k LogKey, plaintext []byte) []byte {
	out := make([]byte, chacha20poly1305.NonceSizeX, chacha20poly1305.NonceSizeX+len(plaintext)+chacha20poly1305.Overhead)
	if _, err := io.ReadFull(r, out); err != nil {
		panic("post: seal log entry: read randomness: " + err.Error())
	}
	// The x/crypto idiom: the nonce is the start of dst, and the
	// ciphertext is appended after it.
	return newLogAEAD(k).Seal(out, out, plaintext, []byte(labelLogEntry))
}

// OpenEntry decrypts a log entry sealed under k. Any failure (truncated,
// altered, another key) wraps ErrTampered.
func OpenEntry(k LogKey, b []byte) ([]byte, error) {
	if len(b) < chacha20poly1305.NonceSizeX+chacha20poly1305.Overhead {
		return nil, fmt.Errorf("%w: log entry of %d bytes is too short", ErrTampered, len(b))
	}
	nonce, ct := b[:chacha20poly1305.NonceSizeX], b[chacha20poly1305.NonceSizeX:]
	p, err := newLogAEAD(k).Open(nil, nonce, ct, []byte(labelLogEntry))
	if err != nil {
		return nil, fmt.Errorf("%w: log entry: %v", ErrTampered, err)
	}
	return p, nil
}

// OpenEntryAny decrypts a log entry sealed under any of ks, trying them
// in order (the current key first, where nearly every entry is). On
// failure it returns the first key's error.
func OpenEntryAny(ks []LogKey, b []byte) ([]byte, error) {
	var first error
	for _, k := range ks {
		p, err := OpenEntry(k, b)
		if err == nil {
			return p, nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = fmt.Errorf("%w: no log key", ErrTampered)
	}
	return nil, first
}

func newLogAEAD(k LogKey) cipher.AEAD {
	aead, err := chacha20poly1305.NewX(k[:])
	if err != nil {
		panic("post: xchacha20poly1305 with a 32-byte key: " + err.Error()) // cannot happen
	}
	return aead
}
