package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epost-mail/epost/internal/demo"
)

// TestImportExport imports an mbox and a maildir into a demo user's
// mailbox over IMAP, resumes without duplicating, and exports it all to a
// maildir with flags kept.
func TestImportExport(t *testing.T) {
	cfg := demo.DefaultConfig()
	cfg.Nodes, cfg.HTTP, cfg.Dir = 2, "", t.TempDir()
	c, err := demo.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	alice := c.Users()[0]
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(alice.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	mbox := filepath.Join(tmp, "old.mbox")
	err = os.WriteFile(mbox, []byte("From a@old.example Mon Jan  2 15:04:05 2006\nSubject: one\n\nfirst\n>From the start\n\n"+
		"From b@old.example Tue Jan  3 10:00:00 2006\nSubject: two\n\nsecond\n\n"+
		"From c@old.example Wed Jan  4 10:00:00 2006\nSubject: three\n\nthird\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	common := []string{"--imap", alice.IMAP, "--user", alice.Address, "--password-file", pw}
	out, _, err := runCmd(t, cmdImport, append(common, "mbox", mbox)...)
	if err != nil || !strings.Contains(out, "imported 3 messages") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	// Again: everything is recorded as done.
	out, _, err = runCmd(t, cmdImport, append(common, "mbox", mbox)...)
	if err != nil || !strings.Contains(out, "imported 0 messages (3 already") {
		t.Fatalf("second import: %v\n%s", err, out)
	}
	md := filepath.Join(tmp, "Maildir")
	for _, d := range []string{"cur", "new", "tmp", ".Projects/cur", ".Projects/new", ".Projects/tmp"} {
		if err := os.MkdirAll(filepath.Join(md, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(md, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(".Projects/cur/1.1.host:2,FS", "Subject: plan\r\n\r\nthe plan\r\n")
	write("new/2.2.host", "Subject: unread\r\n\r\nnews\r\n")
	out, _, err = runCmd(t, cmdImport, append(common, "maildir", md)...)
	if err != nil || !strings.Contains(out, "imported 2 messages") {
		t.Fatalf("maildir import: %v\n%s", err, out)
	}
	exp := filepath.Join(t.TempDir(), "export")
	out, _, err = runCmd(t, cmdExport, append(common, "--maildir", exp)...)
	if err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}
	count := func(dir string) (n int, names []string) {
		es, _ := os.ReadDir(filepath.Join(exp, dir, "cur"))
		for _, e := range es {
			names = append(names, e.Name())
		}
		return len(es), names
	}
	// INBOX: the welcome message, three from the mbox, one from the maildir.
	if n, _ := count(""); n != 5 {
		t.Fatalf("exported INBOX has %d messages, want 5:\n%s", n, out)
	}
	n, names := count(".Projects")
	if n != 1 || !strings.HasSuffix(names[0], ":2,FS") {
		t.Fatalf("exported Projects: %v", names)
	}
	b, err := os.ReadFile(filepath.Join(exp, "cur", firstWith(t, filepath.Join(exp, "cur"), "first")))
	if err != nil || !strings.Contains(string(b), "\r\nFrom the start\r\n") {
		t.Fatalf("the mbox's escaped From line: %q, %v", b, err)
	}
}

// firstWith names the first file in dir that contains s.
func firstWith(t *testing.T, dir, s string) string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil && strings.Contains(string(b), s) {
			return e.Name()
		}
	}
	t.Fatalf("no file in %s contains %q", dir, s)
	return ""
}
