package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
)

// runCmd runs a subcommand function and returns its output.
func runCmd(t *testing.T, f func([]string, io.Writer, io.Writer) error, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := f(args, &out, &errOut)
	return out.String(), errOut.String(), err
}

var codeRE = regexp.MustCompile(`[0-9A-Z]{4}(-[0-9A-Z]{4}){7}`)

func TestIdentityCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")

	out, _, err := runCmd(t, cmdCA, "init", "--dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := identity.ReadCAPublic(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, pub.Fingerprint().String()) {
		t.Fatalf("ca init does not print the fingerprint:\n%s", out)
	}
	if _, _, err := runCmd(t, cmdCA, "init", "--dir", dir); !errors.Is(err, identity.ErrExists) {
		t.Fatalf("second ca init: %v", err)
	}
	v := identity.NewVerifier(pub)

	out, _, err = runCmd(t, cmdCA, "issue-node", "--dir", dir, "--name", "n1")
	if err != nil {
		t.Fatal(err)
	}
	nodeID, err := id.Parse(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("issue-node printed %q: %v", out, err)
	}
	if _, cert, err := identity.ReadNode(dir, "n1", v); err != nil || cert.NodeID.ID != nodeID {
		t.Fatalf("node n1: %v", err)
	}
	if _, _, err := runCmd(t, cmdCA, "issue-node", "--dir", dir); !errors.Is(err, errUsage) {
		t.Fatalf("issue-node without --name: %v", err)
	}

	// Flags may follow the address.
	out, _, err = runCmd(t, cmdUser, "new", "Alice@Example.org", "--dir", dir, "--scrypt-work-factor", "10")
	if err != nil {
		t.Fatal(err)
	}
	code := codeRE.FindString(out)
	if code == "" || !strings.Contains(out, "WRITE THIS CODE DOWN") {
		t.Fatalf("user new printed no recovery code and warning:\n%s", out)
	}
	keys, cert, err := identity.ReadUser(dir, "alice@example.org", v)
	if err != nil {
		t.Fatal(err)
	}
	if cert.UserID != id.ForUser("alice@example.org") {
		t.Fatal("wrong user id")
	}
	if _, _, err := runCmd(t, cmdUser, "new", "--dir", dir, "--scrypt-work-factor", "10", "alice@example.org"); !errors.Is(err, identity.ErrExists) {
		t.Fatalf("second user new: %v", err)
	}
	if _, _, err := runCmd(t, cmdUser, "new", "--dir", dir, "not-an-address"); !errors.Is(err, identity.ErrBadAddress) {
		t.Fatalf("bad address: %v", err)
	}

	// Recover on a fresh disk, from the backup, typing the code sloppily.
	ud, _ := identity.UserDir(dir, "alice@example.org")
	backup := filepath.Join(ud, identity.UserBackupFile)
	fresh := filepath.Join(t.TempDir(), "fresh")
	sloppy := strings.ToLower(strings.ReplaceAll(code, "-", " "))
	if _, _, err := runCmd(t, cmdUser, "recover", "--dir", fresh, "--backup", backup, "--code", sloppy); err != nil {
		t.Fatal(err)
	}
	got, err := identity.ReadUserKeys(fresh, "alice@example.org")
	if err != nil || !got.Equal(keys) {
		t.Fatalf("recovered keys differ: %v", err)
	}
	fud, _ := identity.UserDir(fresh, "alice@example.org")
	if fi, err := os.Stat(filepath.Join(fud, identity.UserKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("recovered user.key: %v %v", fi.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(fud, identity.UserBackupFile)); err != nil {
		t.Fatalf("backup not kept: %v", err)
	}

	// Recovering over existing keys is refused; a wrong code is named.
	if _, _, err := runCmd(t, cmdUser, "recover", "--dir", dir, "--backup", backup, "--code", code); !errors.Is(err, identity.ErrExists) {
		t.Fatalf("recover over existing keys: %v", err)
	}
	other, _ := identity.NewRecoveryCode(bytes.NewReader(make([]byte, 64)))
	if _, _, err := runCmd(t, cmdUser, "recover", "--dir", t.TempDir(), "--backup", backup, "--code", other); !errors.Is(err, identity.ErrWrongRecoveryCode) {
		t.Fatalf("wrong code: %v", err)
	}
	if _, _, err := runCmd(t, cmdUser, "recover", "--dir", t.TempDir(), "--backup", backup); !errors.Is(err, errUsage) {
		t.Fatalf("recover without --code: %v", err)
	}
}

func TestIdentityCommandUsage(t *testing.T) {
	for _, c := range []struct {
		f    func([]string, io.Writer, io.Writer) error
		args []string
	}{
		{cmdCA, nil}, {cmdCA, []string{"frobnicate"}}, {cmdUser, nil}, {cmdUser, []string{"new"}},
		{cmdCA, []string{"init", "--bogus"}}, {cmdCA, []string{"init", "extra"}},
	} {
		if _, _, err := runCmd(t, c.f, c.args...); !errors.Is(err, errUsage) {
			t.Errorf("%q: %v, want a usage error", c.args, err)
		}
	}
	if _, _, err := runCmd(t, cmdCA, "init", "-h"); err != nil && !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

func TestCARevoke(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{{"init", "--dir", dir}, {"issue-node", "--dir", dir, "--name", "n1"}, {"issue-node", "--dir", dir, "--name", "n2"}} {
		if _, errOut, err := runCmd(t, cmdCA, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut)
		}
	}
	if _, errOut, err := runCmd(t, cmdUser, "new", "--dir", dir, "--scrypt-work-factor", "10", "carol@example.org"); err != nil {
		t.Fatalf("user new: %v\n%s", err, errOut)
	}
	ca, err := identity.ReadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	v := identity.NewVerifier(ca.Public())
	_, n2, err := identity.ReadNode(dir, "n2", v)
	if err != nil {
		t.Fatal(err)
	}
	carol, err := identity.ReadUserCert(dir, "carol@example.org", v)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := runCmd(t, cmdCA, "revoke", "--dir", dir, "--node", "n2")
	if err != nil || !strings.Contains(out, "epoch 1") {
		t.Fatalf("revoke n2: %v\n%s", err, out)
	}
	if out, _, err = runCmd(t, cmdCA, "revoke", "--dir", dir, "--node", "n2"); err != nil || !strings.Contains(out, "already revoked") {
		t.Fatalf("revoke n2 again: %v\n%s", err, out)
	}
	if out, _, err = runCmd(t, cmdCA, "revoke", "--dir", dir, "--user", "carol@example.org"); err != nil || !strings.Contains(out, "epoch 2") {
		t.Fatalf("revoke carol: %v\n%s", err, out)
	}
	r, err := identity.ReadRevocation(dir, v)
	if err != nil || r == nil || r.Epoch != 2 || !r.IsRevoked(n2.Serial) || !r.IsRevoked(carol.Serial) {
		t.Fatalf("newest list: %+v %v", r, err)
	}
	// A node that reads the directory enforces it.
	if _, err := v.Adopt(r.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := identity.ReadNode(dir, "n2", v); !errors.Is(err, identity.ErrRevoked) {
		t.Errorf("revoked node's certificate still reads: %v", err)
	}
	if _, _, err := identity.ReadNode(dir, "n1", v); err != nil {
		t.Errorf("n1: %v", err)
	}
	if _, _, err := runCmd(t, cmdCA, "revoke", "--dir", dir); !errors.Is(err, errUsage) {
		t.Errorf("revoke without a target: %v", err)
	}
}

func TestCABackupAndRestore(t *testing.T) {
	dir := t.TempDir()
	if _, errOut, err := runCmd(t, cmdCA, "init", "--dir", dir); err != nil {
		t.Fatalf("init: %v\n%s", err, errOut)
	}
	file := filepath.Join(t.TempDir(), "ca-backup.age")
	out, errOut, err := runCmd(t, cmdCA, "backup", "--dir", dir, "--out", file, "--scrypt-work-factor", "10")
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, errOut)
	}
	m := regexp.MustCompile(`recovery code, shown only now: (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no code printed:\n%s", out)
	}
	// The machine with ca.key is lost; a member's directory has ca.pub.
	if err := os.Remove(filepath.Join(dir, "ca", identity.CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCmd(t, cmdCA, "restore", "--dir", dir, "--backup", file, "--code", "AAAA-AAAA"); !errors.Is(err, identity.ErrBadRecoveryCode) {
		t.Errorf("restore with a mistyped code: %v", err)
	}
	if out, errOut, err = runCmd(t, cmdCA, "restore", "--dir", dir, "--backup", file, "--code", m[1]); err != nil {
		t.Fatalf("restore: %v\n%s", err, errOut)
	}
	// The restored CA issues certificates members accept.
	if _, errOut, err := runCmd(t, cmdCA, "issue-node", "--dir", dir, "--name", "after"); err != nil {
		t.Fatalf("issue after restore: %v\n%s", err, errOut)
	}
	pub, err := identity.ReadCAPublic(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := identity.ReadNode(dir, "after", identity.NewVerifier(pub)); err != nil {
		t.Errorf("certificate from the restored CA: %v", err)
	}
	// Into another community's directory: refused.
	other := t.TempDir()
	if _, _, err := runCmd(t, cmdCA, "init", "--dir", other); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(other, "ca", identity.CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCmd(t, cmdCA, "restore", "--dir", other, "--backup", file, "--code", m[1]); !errors.Is(err, identity.ErrWrongCA) {
		t.Errorf("restore into another community: %v", err)
	}
}

// mustRun runs a subcommand that must succeed.
func mustRun(t *testing.T, f func([]string, io.Writer, io.Writer) error, args ...string) {
	t.Helper()
	if _, errOut, err := runCmd(t, f, args...); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, errOut)
	}
}

// caVerifier reads the CA public key of a data directory.
func caVerifier(t *testing.T, dir string) *identity.Verifier {
	t.Helper()
	pub, err := identity.ReadCAPublic(dir)
	if err != nil {
		t.Fatal(err)
	}
	return identity.NewVerifier(pub)
}

func TestCARotateNode(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, cmdCA, "init", "--dir", dir)
	mustRun(t, cmdCA, "issue-node", "--dir", dir, "--name", "n1")
	v := caVerifier(t, dir)
	oldKey, old, err := identity.ReadNode(dir, "n1", v)
	if err != nil {
		t.Fatal(err)
	}
	if out, errOut, err := runCmd(t, cmdCA, "rotate-node", "--dir", dir, "--name", "n1"); err != nil || !strings.Contains(out, "epoch 1") {
		t.Fatalf("rotate-node: %v\n%s%s", err, out, errOut)
	}
	newKey, cert, err := identity.ReadNode(dir, "n1", v)
	if err != nil {
		t.Fatal(err)
	}
	if cert.NodeID != old.NodeID || newKey.Public() == oldKey.Public() || cert.Serial == old.Serial {
		t.Errorf("rotated: id %s (was %s), same key %v, same serial %v", cert.NodeID, old.NodeID, newKey.Public() == oldKey.Public(), cert.Serial == old.Serial)
	}
	r, err := identity.ReadRevocation(dir, v)
	if err != nil || r == nil || !r.IsRevoked(old.Serial) || r.IsRevoked(cert.Serial) {
		t.Fatalf("revocation after rotation: %+v %v", r, err)
	}
	retired, _ := filepath.Glob(filepath.Join(dir, "nodes", "n1.retired-*"))
	if len(retired) != 1 {
		t.Errorf("old key kept in %v", retired)
	}
}

func TestUserRotateKey(t *testing.T) {
	dir := t.TempDir()
	const addr = "alice@example.org"
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, cmdCA, "init", "--dir", dir)
	mustRun(t, cmdUser, "new", "--dir", dir, "--scrypt-work-factor", "10", addr)
	mustRun(t, cmdUser, "passwd", "--dir", dir, "--password-file", pwFile, addr)
	v := caVerifier(t, dir)
	oldKeys, old, err := identity.ReadUser(dir, addr, v)
	if err != nil {
		t.Fatal(err)
	}
	ud, _ := identity.UserDir(dir, addr)
	pw, _ := os.ReadFile(filepath.Join(ud, PasswordFile))

	out, errOut, err := runCmd(t, cmdUser, "rotate-key", "--dir", dir, "--scrypt-work-factor", "10", addr)
	if err != nil {
		t.Fatalf("rotate-key: %v\n%s%s", err, out, errOut)
	}
	code := codeRE.FindString(out)
	if code == "" || !strings.Contains(out, "supersedes") {
		t.Fatalf("rotate-key printed no recovery code or no word on the old certificate:\n%s", out)
	}
	keys, cert, err := identity.ReadUser(dir, addr, v)
	if err != nil {
		t.Fatal(err)
	}
	if cert.UserID != old.UserID || cert.Serial == old.Serial || cert.Signing == old.Signing || keys.Generation() != 2 || !keys.Retired[0].Equal(oldKeys) {
		t.Fatal("the rotated user has the old keys, or lost them")
	}
	// Superseded, not revoked: what the old certificate signed stays valid.
	if r, err := identity.ReadRevocation(dir, v); err != nil || r != nil {
		t.Fatalf("rotation revoked something: %+v %v", r, err)
	}
	if got, _ := os.ReadFile(filepath.Join(ud, PasswordFile)); !bytes.Equal(got, pw) || len(pw) == 0 {
		t.Error("the password did not carry over")
	}
	retired, _ := filepath.Glob(filepath.Join(dir, "users", addr+".retired-*"))
	if len(retired) != 1 {
		t.Errorf("old keys kept in %v", retired)
	}
	// The new backup, with the new code, restores every key pair.
	fresh := t.TempDir()
	mustRun(t, cmdUser, "recover", "--dir", fresh, "--backup", filepath.Join(ud, identity.UserBackupFile), "--code", code)
	if got, err := identity.ReadUserKeys(fresh, addr); err != nil || !got.Equal(keys) {
		t.Fatalf("recovered keys differ: %v", err)
	}
	// A second rotation keeps both earlier pairs; an unknown user has none.
	mustRun(t, cmdUser, "rotate-key", "--dir", dir, "--scrypt-work-factor", "10", addr)
	if again, _, err := identity.ReadUser(dir, addr, v); err != nil || again.Generation() != 3 || !again.Retired[0].Equal(keys.Generations()[0]) {
		t.Fatalf("second rotation: %v", err)
	}
	if _, _, err := runCmd(t, cmdUser, "rotate-key", "--dir", dir, "bob@example.org"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("rotate an unknown user: %v", err)
	}
}
