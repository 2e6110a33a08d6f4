package identity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Layout of a data directory DIR:
//
//	DIR/ca/ca.key                 CA private key (0600; only on the CA's machine)
//	DIR/ca/ca.pub                 CA public key (every member has it)
//	DIR/nodes/NAME/node.key       node private key (0600)
//	DIR/nodes/NAME/node.cert      node certificate
//	DIR/users/ADDRESS/user.key    user private keys (0600)
//	DIR/users/ADDRESS/user.cert   user certificate
//	DIR/users/ADDRESS/keybackup.age  user keys sealed with the recovery code (0600)
//
// Directories are created 0700. Nothing is ever overwritten.
const (
	CAKeyFile      = "ca.key"
	CAPublicFile   = "ca.pub"
	NodeKeyFile    = "node.key"
	NodeCertFile   = "node.cert"
	UserKeyFile    = "user.key"
	UserCertFile   = "user.cert"
	UserBackupFile = "keybackup.age"
)

const (
	permPrivate = 0o600
	permPublic  = 0o644
	permDir     = 0o700
)

// CADir returns DIR/ca.
func CADir(dir string) string { return filepath.Join(dir, "ca") }

// NodeDir returns DIR/nodes/NAME, checking that name is a plain file
// name: letters, digits, '.', '_' and '-', not starting with '.', at most
// 64 characters.
func NodeDir(dir, name string) (string, error) {
	if err := checkNodeName(name); err != nil {
		return "", err
	}
	return filepath.Join(dir, "nodes", name), nil
}

// UserDir returns DIR/users/ADDRESS for the canonical form of address.
func UserDir(dir, address string) (string, error) {
	addr, err := CanonicalAddress(address)
	if err != nil {
		return "", err
	}
	// A canonical address contains no '/' and cannot start with '.', so it
	// is one plain path element.
	return filepath.Join(dir, "users", addr), nil
}

func checkNodeName(name string) error {
	if name == "" || len(name) > 64 || name[0] == '.' {
		return fmt.Errorf("identity: node name %q: must be 1 to 64 characters, not starting with '.'", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("identity: node name %q: character %q not allowed (letters, digits, . _ - only)", name, c)
		}
	}
	return nil
}

// fileToWrite is one file of a set written together.
type fileToWrite struct {
	path string
	data []byte
	perm os.FileMode
}

// writeNew writes files into dir (created 0700), refusing with ErrExists
// before writing anything if any of them exists. Each file is written to a
// temporary name, synced, and hard-linked into place, which fails rather
// than replace a file that appeared meanwhile; a crash never leaves a
// half-written key under the real name.
func writeNew(dir string, files ...fileToWrite) error {
	for _, f := range files {
		if _, err := os.Lstat(f.path); err == nil {
			return fmt.Errorf("%w: %s", ErrExists, f.path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := os.MkdirAll(dir, permDir); err != nil {
		return err
	}
	for _, f := range files {
		if err := writeOne(dir, f); err != nil {
			return err
		}
	}
	return syncDir(dir)
}

func writeOne(dir string, f fileToWrite) (err error) {
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(f.path)+"-*")
	if err != nil {
		return err
	}
	defer func() {
		// The temporary name goes in every case: on success the data lives
		// on under f.path.
		if rerr := os.Remove(tmp.Name()); rerr != nil && err == nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = rerr
		}
	}()
	// CreateTemp makes the file 0600, so a private key is never readable by
	// others, even for a moment.
	if _, err := tmp.Write(f.data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(f.perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), f.path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, f.path)
		}
		return err
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteCA writes the CA's private key (ca.key, 0600) and public key
// (ca.pub) under DIR/ca.
func WriteCA(dir string, ca *CA) error {
	d := CADir(dir)
	err := writeNew(d,
		fileToWrite{filepath.Join(d, CAKeyFile), encodeCAKey(ca), permPrivate},
		fileToWrite{filepath.Join(d, CAPublicFile), encodeCAPublic(ca.Public()), permPublic},
	)
	if err != nil {
		return fmt.Errorf("identity: write CA: %w", err)
	}
	return nil
}

// ReadCA reads the CA's private key from DIR/ca/ca.key.
func ReadCA(dir string) (*CA, error) {
	p := filepath.Join(CADir(dir), CAKeyFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("identity: read CA: %w", err)
	}
	ca, err := decodeCAKey(b)
	if err != nil {
		return nil, fmt.Errorf("identity: read CA %s: %w", p, err)
	}
	return ca, nil
}

// ReadCAPublic reads the CA's public key from DIR/ca/ca.pub.
func ReadCAPublic(dir string) (CAPublicKey, error) {
	p := filepath.Join(CADir(dir), CAPublicFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return CAPublicKey{}, fmt.Errorf("identity: read CA public key: %w", err)
	}
	k, err := decodeCAPublic(b)
	if err != nil {
		return CAPublicKey{}, fmt.Errorf("identity: read CA public key %s: %w", p, err)
	}
	return k, nil
}

// WriteNode writes a node's key (node.key, 0600) and certificate
// (node.cert) under DIR/nodes/NAME. The certificate must be for the key.
func WriteNode(dir, name string, key NodeKey, cert *NodeCert) error {
	d, err := NodeDir(dir, name)
	if err != nil {
		return err
	}
	if !cert.Matches(key) {
		return fmt.Errorf("identity: write node %s: %w", name, ErrKeyMismatch)
	}
	err = writeNew(d,
		fileToWrite{filepath.Join(d, NodeKeyFile), encodeNodeKey(key), permPrivate},
		fileToWrite{filepath.Join(d, NodeCertFile), cert.Bytes(), permPublic},
	)
	if err != nil {
		return fmt.Errorf("identity: write node %s: %w", name, err)
	}
	return nil
}

// ReadNode reads a node's key and certificate from DIR/nodes/NAME,
// verifies the certificate with v, and checks that it is for the key.
func ReadNode(dir, name string, v *Verifier) (NodeKey, *NodeCert, error) {
	d, err := NodeDir(dir, name)
	if err != nil {
		return NodeKey{}, nil, err
	}
	kb, err := os.ReadFile(filepath.Join(d, NodeKeyFile))
	if err != nil {
		return NodeKey{}, nil, fmt.Errorf("identity: read node %s: %w", name, err)
	}
	key, err := decodeNodeKey(kb)
	if err != nil {
		return NodeKey{}, nil, fmt.Errorf("identity: read node %s key: %w", name, err)
	}
	cb, err := os.ReadFile(filepath.Join(d, NodeCertFile))
	if err != nil {
		return NodeKey{}, nil, fmt.Errorf("identity: read node %s: %w", name, err)
	}
	cert, err := v.VerifyNode(cb)
	if err != nil {
		return NodeKey{}, nil, fmt.Errorf("identity: read node %s: %w", name, err)
	}
	if !cert.Matches(key) {
		return NodeKey{}, nil, fmt.Errorf("identity: read node %s: %w", name, ErrKeyMismatch)
	}
	return key, cert, nil
}

// WriteUser writes a user's private keys (user.key, 0600), certificate
// (user.cert) and sealed key backup (keybackup.age, 0600) under
// DIR/users/ADDRESS. The certificate must be for the keys.
func WriteUser(dir string, keys UserKeys, cert *UserCert, backup []byte) error {
	d, err := UserDir(dir, keys.Address)
	if err != nil {
		return fmt.Errorf("identity: write user: %w", err)
	}
	if !cert.Matches(keys) {
		return fmt.Errorf("identity: write user %s: %w", keys.Address, ErrKeyMismatch)
	}
	kb, err := encodeUserKeys(keys)
	if err != nil {
		return fmt.Errorf("identity: write user %s: %w", keys.Address, err)
	}
	err = writeNew(d,
		fileToWrite{filepath.Join(d, UserKeyFile), kb, permPrivate},
		fileToWrite{filepath.Join(d, UserCertFile), cert.Bytes(), permPublic},
		fileToWrite{filepath.Join(d, UserBackupFile), backup, permPrivate},
	)
	if err != nil {
		return fmt.Errorf("identity: write user %s: %w", keys.Address, err)
	}
	return nil
}

// WriteUserKeys writes only user.key (0600) under DIR/users/ADDRESS, as
// `epost user recover` does. It refuses to replace existing keys.
func WriteUserKeys(dir string, keys UserKeys) error {
	d, err := UserDir(dir, keys.Address)
	if err != nil {
		return fmt.Errorf("identity: write user keys: %w", err)
	}
	kb, err := encodeUserKeys(keys)
	if err != nil {
		return fmt.Errorf("identity: write user keys for %s: %w", keys.Address, err)
	}
	if err := writeNew(d, fileToWrite{filepath.Join(d, UserKeyFile), kb, permPrivate}); err != nil {
		return fmt.Errorf("identity: write user keys for %s: %w", keys.Address, err)
	}
	return nil
}

// WriteUserBackup writes only keybackup.age (0600) under
// DIR/users/ADDRESS. It refuses to replace an existing backup.
func WriteUserBackup(dir, address string, backup []byte) error {
	d, err := UserDir(dir, address)
	if err != nil {
		return fmt.Errorf("identity: write user backup: %w", err)
	}
	if err := writeNew(d, fileToWrite{filepath.Join(d, UserBackupFile), backup, permPrivate}); err != nil {
		return fmt.Errorf("identity: write user backup for %s: %w", address, err)
	}
	return nil
}

// ReadUserKeys reads a user's private keys from DIR/users/ADDRESS/user.key
// and checks they belong to address.
func ReadUserKeys(dir, address string) (UserKeys, error) {
	d, err := UserDir(dir, address)
	if err != nil {
		return UserKeys{}, fmt.Errorf("identity: read user keys: %w", err)
	}
	p := filepath.Join(d, UserKeyFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return UserKeys{}, fmt.Errorf("identity: read user keys: %w", err)
	}
	keys, err := decodeUserKeys(b)
	if err != nil {
		return UserKeys{}, fmt.Errorf("identity: read user keys %s: %w", p, err)
	}
	if keys.Address != filepath.Base(d) {
		return UserKeys{}, fmt.Errorf("identity: read user keys %s: %w: keys are for %q", p, ErrWrongAddress, keys.Address)
	}
	return keys, nil
}

// ReadUserCert reads DIR/users/ADDRESS/user.cert and verifies it with v
// for address.
func ReadUserCert(dir, address string, v *Verifier) (*UserCert, error) {
	d, err := UserDir(dir, address)
	if err != nil {
		return nil, fmt.Errorf("identity: read user cert: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(d, UserCertFile))
	if err != nil {
		return nil, fmt.Errorf("identity: read user cert: %w", err)
	}
	c, err := v.VerifyUser(b, address)
	if err != nil {
		return nil, fmt.Errorf("identity: read user cert: %w", err)
	}
	return c, nil
}

// ReadUser reads a user's keys and certificate, verifies the certificate
// with v, and checks that it certifies the keys.
func ReadUser(dir, address string, v *Verifier) (UserKeys, *UserCert, error) {
	keys, err := ReadUserKeys(dir, address)
	if err != nil {
		return UserKeys{}, nil, err
	}
	cert, err := ReadUserCert(dir, address, v)
	if err != nil {
		return UserKeys{}, nil, err
	}
	if !cert.Matches(keys) {
		return UserKeys{}, nil, fmt.Errorf("identity: read user %s: %w", keys.Address, ErrKeyMismatch)
	}
	return keys, cert, nil
}

// revocationFile names the file of the revocation list at epoch e: lists
// are never overwritten, each epoch has its own.
func revocationFile(e uint64) string { return fmt.Sprintf("revocation-%08d.list", e) }

// WriteRevocation writes a revocation list under DIR/ca, named by its
// epoch.
func WriteRevocation(dir string, r *Revocation) error {
	d := CADir(dir)
	if err := writeNew(d, fileToWrite{filepath.Join(d, revocationFile(r.Epoch)), r.Bytes(), permPublic}); err != nil {
		return fmt.Errorf("identity: write revocation: %w", err)
	}
	return nil
}

// ReadRevocation returns the newest revocation list under DIR/ca that v's
// CA signed, nil if there is none.
func ReadRevocation(dir string, v *Verifier) (*Revocation, error) {
	names, err := filepath.Glob(filepath.Join(CADir(dir), "revocation-*.list"))
	if err != nil {
		return nil, err
	}
	var best *Revocation
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("identity: read revocation: %w", err)
		}
		r, err := v.VerifyRevocation(b)
		if err != nil {
			return nil, fmt.Errorf("identity: read revocation %s: %w", n, err)
		}
		if r.Newer(best) {
			best = r
		}
	}
	return best, nil
}

// RestoreCA writes a CA's private key back under DIR/ca, and its public
// key if that is missing (a member's data directory has ca.pub already).
// An existing ca.key is never overwritten.
func RestoreCA(dir string, ca *CA) error {
	d := CADir(dir)
	files := []fileToWrite{{filepath.Join(d, CAKeyFile), encodeCAKey(ca), permPrivate}}
	if _, err := os.Stat(filepath.Join(d, CAPublicFile)); errors.Is(err, os.ErrNotExist) {
		files = append(files, fileToWrite{filepath.Join(d, CAPublicFile), encodeCAPublic(ca.Public()), permPublic})
	}
	if err := writeNew(d, files...); err != nil {
		return fmt.Errorf("identity: restore CA: %w", err)
	}
	return nil
}
