package identity

import (
	"fmt"

	"github.com/epost-mail/epost/internal/wire"
)

// Key file encodings. Each starts with a kind string, so that one kind of
// key can never be loaded as another, and a version.
const (
	keyFileVersion  = 1
	kindCAKey       = "epost ca key"
	kindCAPublicKey = "epost ca public key"
	kindNodeKey     = "epost node key"
	kindUserKeys    = "epost user keys"
)

// seedFile holds an Ed25519 private key as its 32-byte seed.
type seedFile struct {
	_       struct{} `cbor:",toarray"`
	Kind    string
	Version uint16
	Seed    []byte
}

// publicFile holds an Ed25519 public key.
type publicFile struct {
	_       struct{} `cbor:",toarray"`
	Kind    string
	Version uint16
	Key     []byte
}

// userKeysFile holds a user's private keys: user.key, and the plaintext
// of a key backup.
type userKeysFile struct {
	_       struct{} `cbor:",toarray"`
	Kind    string
	Version uint16
	Address string
	Signing []byte // Ed25519 seed
	Sealing string // age X25519 secret key, "AGE-SECRET-KEY-1..."
}

func checkKind(gotKind string, gotVersion uint16, kind string) error {
	if gotKind != kind {
		return malformed("file holds %q, want %q", gotKind, kind)
	}
	if gotVersion != keyFileVersion {
		return fmt.Errorf("%w: %w: %s version %d, this build reads %d", ErrMalformed, wire.ErrVersion, kind, gotVersion, keyFileVersion)
	}
	return nil
}

func decodeSeedFile(b []byte, kind string) (edPrivate, error) {
	var f seedFile
	if err := wire.Unmarshal(b, &f); err != nil {
		return edPrivate{}, asMalformed(err)
	}
	if err := checkKind(f.Kind, f.Version, kind); err != nil {
		return edPrivate{}, err
	}
	return edPrivateFromSeed(kind, f.Seed)
}

func encodeCAKey(ca *CA) []byte {
	return wire.MustMarshal(seedFile{Kind: kindCAKey, Version: keyFileVersion, Seed: ca.key.seed()})
}

func decodeCAKey(b []byte) (*CA, error) {
	k, err := decodeSeedFile(b, kindCAKey)
	if err != nil {
		return nil, err
	}
	return &CA{k}, nil
}

func encodeCAPublic(k CAPublicKey) []byte {
	return wire.MustMarshal(publicFile{Kind: kindCAPublicKey, Version: keyFileVersion, Key: k.Bytes()})
}

func decodeCAPublic(b []byte) (CAPublicKey, error) {
	var f publicFile
	if err := wire.Unmarshal(b, &f); err != nil {
		return CAPublicKey{}, asMalformed(err)
	}
	if err := checkKind(f.Kind, f.Version, kindCAPublicKey); err != nil {
		return CAPublicKey{}, err
	}
	p, err := edPublicFromBytes("CA public key", f.Key)
	return CAPublicKey{p}, err
}

func encodeNodeKey(k NodeKey) []byte {
	return wire.MustMarshal(seedFile{Kind: kindNodeKey, Version: keyFileVersion, Seed: k.seed()})
}

func decodeNodeKey(b []byte) (NodeKey, error) {
	k, err := decodeSeedFile(b, kindNodeKey)
	return NodeKey{k}, err
}

func encodeUserKeys(u UserKeys) ([]byte, error) {
	addr, err := CanonicalAddress(u.Address)
	if err != nil {
		return nil, err
	}
	if u.Signing.k == nil || u.Sealing.IsZero() {
		return nil, fmt.Errorf("identity: user keys for %s: missing key", addr)
	}
	return wire.Marshal(userKeysFile{
		Kind: kindUserKeys, Version: keyFileVersion, Address: addr,
		Signing: u.Signing.seed(), Sealing: u.Sealing.secret(),
	})
}

func decodeUserKeys(b []byte) (UserKeys, error) {
	var f userKeysFile
	if err := wire.Unmarshal(b, &f); err != nil {
		return UserKeys{}, asMalformed(err)
	}
	if err := checkKind(f.Kind, f.Version, kindUserKeys); err != nil {
		return UserKeys{}, err
	}
	addr, err := CanonicalAddress(f.Address)
	if err != nil {
		return UserKeys{}, asMalformed(err)
	}
	if addr != f.Address {
		return UserKeys{}, malformed("address %q is not canonical", f.Address)
	}
	sk, err := edPrivateFromSeed("signing key", f.Signing)
	if err != nil {
		return UserKeys{}, err
	}
	xk, err := ParseSealingKey(f.Sealing)
	if err != nil {
		return UserKeys{}, err
	}
	return UserKeys{Address: addr, Signing: SigningKey{sk}, Sealing: xk}, nil
}
