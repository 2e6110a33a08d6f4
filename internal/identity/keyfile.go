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
// of a key backup. This is version 1, which has no retired keys; keys
// that were never rotated are still written so, and older builds read
// them.
type userKeysFile struct {
	_       struct{} `cbor:",toarray"`
	Kind    string
	Version uint16
	Address string
	Signing []byte // Ed25519 seed
	Sealing string // age X25519 secret key, "AGE-SECRET-KEY-1..."
}

// userKeysFileRotated is version 2 of userKeysFile, for rotated keys: the
// same fields, then the retired key pairs, newest first.
type userKeysFileRotated struct {
	_       struct{} `cbor:",toarray"`
	Kind    string
	Version uint16
	Address string
	Signing []byte
	Sealing string
	Retired []retiredKeysFile
}

// retiredKeysFile is one retired key pair of a userKeysFileRotated.
type retiredKeysFile struct {
	_       struct{} `cbor:",toarray"`
	Signing []byte
	Sealing string
}

// userKeysRotatedVersion is the version of userKeysFileRotated.
const userKeysRotatedVersion = 2

func checkKind(gotKind string, gotVersion uint16, kind string) error {
	return checkKindVersion(gotKind, gotVersion, kind, keyFileVersion)
}

func checkKindVersion(gotKind string, gotVersion uint16, kind string, version uint16) error {
	if gotKind != kind {
		return malformed("file holds %q, want %q", gotKind, kind)
	}
	if gotVersion != version {
		return fmt.Errorf("%w: %w: %s version %d, this build reads %d", ErrMalformed, wire.ErrVersion, kind, gotVersion, version)
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
	f := userKeysFileRotated{Kind: kindUserKeys, Version: userKeysRotatedVersion, Address: addr}
	for i, g := range u.Generations() {
		if g.Signing.k == nil || g.Sealing.IsZero() {
			return nil, fmt.Errorf("identity: user keys for %s: missing key", addr)
		}
		if i == 0 {
			f.Signing, f.Sealing = g.Signing.seed(), g.Sealing.secret()
			continue
		}
		f.Retired = append(f.Retired, retiredKeysFile{Signing: g.Signing.seed(), Sealing: g.Sealing.secret()})
	}
	if len(f.Retired) == 0 {
		return wire.Marshal(userKeysFile{Kind: f.Kind, Version: keyFileVersion, Address: addr, Signing: f.Signing, Sealing: f.Sealing})
	}
	return wire.Marshal(f)
}

func decodeUserKeys(b []byte) (UserKeys, error) {
	var f userKeysFileRotated
	if err := wire.Unmarshal(b, &f); err == nil {
		if err := checkKindVersion(f.Kind, f.Version, kindUserKeys, userKeysRotatedVersion); err != nil {
			return UserKeys{}, err
		}
		if len(f.Retired) == 0 {
			return UserKeys{}, malformed("rotated user keys without retired keys")
		}
	} else {
		// Version 1 has no Retired field, so it decodes only as its own
		// struct.
		var v1 userKeysFile
		if err := wire.Unmarshal(b, &v1); err != nil {
			return UserKeys{}, asMalformed(err)
		}
		if err := checkKind(v1.Kind, v1.Version, kindUserKeys); err != nil {
			return UserKeys{}, err
		}
		f = userKeysFileRotated{Kind: v1.Kind, Version: v1.Version, Address: v1.Address, Signing: v1.Signing, Sealing: v1.Sealing}
	}
	addr, err := CanonicalAddress(f.Address)
	if err != nil {
		return UserKeys{}, asMalformed(err)
	}
	if addr != f.Address {
		return UserKeys{}, malformed("address %q is not canonical", f.Address)
	}
	keys, err := decodeKeyPair(addr, f.Signing, f.Sealing)
	if err != nil {
		return UserKeys{}, err
	}
	for _, r := range f.Retired {
		old, err := decodeKeyPair(addr, r.Signing, r.Sealing)
		if err != nil {
			return UserKeys{}, err
		}
		keys.Retired = append(keys.Retired, old)
	}
	return keys, nil
}

// decodeKeyPair reads one signing seed and sealing key of address.
func decodeKeyPair(addr string, signing []byte, sealing string) (UserKeys, error) {
	sk, err := edPrivateFromSeed("signing key", signing)
	if err != nil {
		return UserKeys{}, err
	}
	xk, err := ParseSealingKey(sealing)
	if err != nil {
		return UserKeys{}, err
	}
	return UserKeys{Address: addr, Signing: SigningKey{sk}, Sealing: xk}, nil
}
