package identity

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestFiles(t *testing.T) {
	w := newWorld(t, 1)
	dir := filepath.Join(t.TempDir(), "data")

	if err := WriteCA(dir, w.ca); err != nil {
		t.Fatal(err)
	}
	ca, err := ReadCA(dir)
	if err != nil || ca.Fingerprint() != w.ca.Fingerprint() {
		t.Fatalf("read CA: %v", err)
	}
	pub, err := ReadCAPublic(dir)
	if err != nil || pub != w.ca.Public() {
		t.Fatalf("read CA public key: %v", err)
	}
	v := NewVerifier(pub)

	if err := WriteNode(dir, "n1", w.nodeKey, w.node); err != nil {
		t.Fatal(err)
	}
	nk, nc, err := ReadNode(dir, "n1", v)
	if err != nil || nk.Public() != w.nodeKey.Public() || nc.NodeID != w.node.NodeID {
		t.Fatalf("read node: %v", err)
	}

	code, _ := NewRecoveryCode(w.rnd)
	backup, err := SealBackup(w.user, code, testWorkFactor)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteUser(dir, w.user, w.userCert, backup); err != nil {
		t.Fatal(err)
	}
	uk, uc, err := ReadUser(dir, "ALICE@lab.example.org", v)
	if err != nil || !uk.Equal(w.user) || uc.Serial != w.userCert.Serial {
		t.Fatalf("read user: %v", err)
	}

	ud, _ := UserDir(dir, w.user.Address)
	nd, _ := NodeDir(dir, "n1")
	perms := map[string]fs.FileMode{
		dir:                                 0o700,
		CADir(dir):                          0o700,
		filepath.Join(CADir(dir), "ca.key"): 0o600,
		filepath.Join(CADir(dir), "ca.pub"): 0o644,
		nd:                                  0o700,
		filepath.Join(nd, "node.key"):       0o600,
		filepath.Join(nd, "node.cert"):      0o644,
		ud:                                  0o700,
		filepath.Join(ud, "user.key"):       0o600,
		filepath.Join(ud, "user.cert"):      0o644,
		filepath.Join(ud, "keybackup.age"):  0o600,
	}
	for p, want := range perms {
		if got := mode(t, p); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
	}
	// No temporary files are left behind.
	for _, d := range []string{CADir(dir), nd, ud} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if e.Name()[0] == '.' {
				t.Errorf("left over: %s", filepath.Join(d, e.Name()))
			}
		}
	}

	// Nothing is overwritten.
	other := newWorld(t, 2)
	if err := WriteCA(dir, other.ca); !errors.Is(err, ErrExists) {
		t.Fatalf("second CA: %v", err)
	}
	if err := WriteNode(dir, "n1", other.nodeKey, other.node); !errors.Is(err, ErrExists) {
		t.Fatalf("second node n1: %v", err)
	}
	if err := WriteUser(dir, other.user, other.userCert, backup); !errors.Is(err, ErrExists) {
		t.Fatalf("second alice: %v", err)
	}
	if err := WriteUserKeys(dir, other.user); !errors.Is(err, ErrExists) {
		t.Fatalf("second alice keys: %v", err)
	}
	if ca, _ := ReadCA(dir); ca.Fingerprint() != w.ca.Fingerprint() {
		t.Fatal("CA key replaced")
	}

	// Mismatched key and certificate are refused.
	if err := WriteNode(dir, "n2", other.nodeKey, w.node); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("mismatched node: %v", err)
	}
	if err := WriteUser(dir, other.user, w.userCert, backup); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("mismatched user: %v", err)
	}
	// A certificate from another community is refused on read.
	if _, _, err := ReadNode(dir, "n1", NewVerifier(other.ca.Public())); !errors.Is(err, ErrWrongCA) {
		t.Fatalf("node read with other CA: %v", err)
	}
}

func TestRecoverUserKeys(t *testing.T) {
	w := newWorld(t, 1)
	dir := t.TempDir()
	code, _ := NewRecoveryCode(w.rnd)
	backup, err := SealBackup(w.user, code, testWorkFactor)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := OpenBackup(backup, code)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteUserKeys(dir, keys); err != nil {
		t.Fatal(err)
	}
	if err := WriteUserBackup(dir, keys.Address, backup); err != nil {
		t.Fatal(err)
	}
	got, err := ReadUserKeys(dir, w.user.Address)
	if err != nil || !got.Equal(w.user) {
		t.Fatalf("read recovered keys: %v", err)
	}
	ud, _ := UserDir(dir, w.user.Address)
	if m := mode(t, filepath.Join(ud, UserKeyFile)); m != 0o600 {
		t.Fatalf("user.key mode %o", m)
	}
}

func TestFileNames(t *testing.T) {
	for _, bad := range []string{"", ".", "..", ".hidden", "a/b", `a\b`, "a b", "x\x00"} {
		if _, err := NodeDir("d", bad); err == nil {
			t.Errorf("node name %q accepted", bad)
		}
	}
	for _, bad := range []string{"../x@y", "a/b@c", "x@y/z", "..@x"} {
		if _, err := UserDir("d", bad); err == nil {
			t.Errorf("address %q accepted as a directory", bad)
		}
	}
	if _, err := ReadUserKeys(t.TempDir(), "nobody@x"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing keys: %v", err)
	}
}
