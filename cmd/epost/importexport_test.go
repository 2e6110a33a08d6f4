package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

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
	// Status and X-Status as mutt and Thunderbird write them; the third
	// message's From line has no date, so its Date header counts.
	err = os.WriteFile(mbox, []byte("From a@old.example Mon Jan  2 15:04:05 2006\nSubject: one\nStatus: RO\nX-Status: AF\n\nfirst\n>From the start\n\n"+
		"From b@old.example Tue Jan  3 10:00:00 2006\nSubject: two\nStatus: O\nX-Status: DT\n\nsecond\n\n"+
		"From c@old.example\nSubject: three\nDate: Wed, 04 Jan 2006 10:00:00 +0100\n\nthird\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	common := []string{"--imap", alice.IMAP, "--user", alice.Address, "--password-file", pw}
	out, _, err := runCmd(t, cmdImport, append(common, "mbox", mbox)...)
	if err != nil || !strings.Contains(out, "imported 3 messages") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	want := map[string]struct {
		flags []imap.Flag
		date  time.Time
	}{
		"one":   {[]imap.Flag{imap.FlagAnswered, imap.FlagFlagged, imap.FlagSeen}, time.Date(2006, 1, 2, 15, 4, 5, 0, time.UTC)},
		"two":   {[]imap.Flag{imap.FlagDeleted, imap.FlagDraft}, time.Date(2006, 1, 3, 10, 0, 0, 0, time.UTC)},
		"three": {nil, time.Date(2006, 1, 4, 9, 0, 0, 0, time.UTC)},
	}
	got := folderMessages(t, alice.IMAP, alice.Address, alice.Password, "INBOX")
	for subj, w := range want {
		m, ok := got[subj]
		if !ok {
			t.Fatalf("%q was not imported: %v", subj, got)
		}
		if !slices.Equal(m.flags, w.flags) {
			t.Errorf("%q: flags %v, want %v", subj, m.flags, w.flags)
		}
		if !m.date.Equal(w.date) {
			t.Errorf("%q: INTERNALDATE %v, want %v", subj, m.date, w.date)
		}
		if m.n != 1 {
			t.Errorf("%q imported %d times", subj, m.n)
		}
		if strings.Contains(m.body, "Status:") {
			t.Errorf("%q keeps its mbox status fields:\n%s", subj, m.body)
		}
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
	// A maildir message's date is its file's modification time.
	delivered := time.Date(2019, 5, 6, 7, 8, 9, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(md, "new/2.2.host"), delivered, delivered); err != nil {
		t.Fatal(err)
	}
	out, _, err = runCmd(t, cmdImport, append(common, "maildir", md)...)
	if err != nil || !strings.Contains(out, "imported 2 messages") {
		t.Fatalf("maildir import: %v\n%s", err, out)
	}
	if m := folderMessages(t, alice.IMAP, alice.Address, alice.Password, "INBOX")["unread"]; !m.date.Equal(delivered) || len(m.flags) != 0 {
		t.Fatalf("the maildir message: date %v flags %v, want %v and none", m.date, m.flags, delivered)
	}
	if m := folderMessages(t, alice.IMAP, alice.Address, alice.Password, "Projects")["plan"]; !slices.Equal(m.flags, []imap.Flag{imap.FlagFlagged, imap.FlagSeen}) {
		t.Fatalf("the maildir message in Projects: flags %v", m.flags)
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
	// The export keeps the dates as file times.
	if fi, err := os.Stat(filepath.Join(exp, "cur", firstWith(t, filepath.Join(exp, "cur"), "second"))); err != nil || !fi.ModTime().Equal(want["two"].date) {
		t.Fatalf("exported message two: %v, %v", fi, err)
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

type fetched struct {
	n     int // how many messages have this subject
	flags []imap.Flag
	date  time.Time
	body  string
}

// folderMessages fetches a folder's messages by subject; flags are
// sorted.
func folderMessages(t *testing.T, addr, user, pass, folder string) map[string]fetched {
	t.Helper()
	cl, err := imapSession(addr, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sel, err := cl.Select(folder, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]fetched{}
	if sel.NumMessages == 0 {
		return out
	}
	var set imap.SeqSet
	set.AddRange(1, sel.NumMessages)
	msgs, err := cl.Fetch(set, &imap.FetchOptions{Envelope: true, Flags: true, InternalDate: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		f := out[m.Envelope.Subject]
		f.n++
		f.flags = slices.Sorted(slices.Values(m.Flags))
		f.date = m.InternalDate
		for _, b := range m.BodySection {
			f.body = string(b.Bytes)
		}
		out[m.Envelope.Subject] = f
	}
	return out
}

// TestImportResume stops an import twice in the middle, once right after
// the node stored a message but before its OK reached the importer, once
// before an APPEND reached the node; the reruns neither duplicate nor
// miss a message, identical messages in the mbox included.
func TestImportResume(t *testing.T) {
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
	var mbox strings.Builder
	subjects := []string{"m1", "m2", "m3", "twin", "twin", "m6", "m7", "m8"}
	for i, s := range subjects {
		fmt.Fprintf(&mbox, "From x@old.example Mon Jan  2 15:04:%02d 2006\nSubject: %s\n\nbody\n\n", i, s)
	}
	// The twins are identical, From line included.
	text := strings.Replace(mbox.String(), "15:04:04", "15:04:03", 1)
	path := filepath.Join(t.TempDir(), "old.mbox")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(addr string) (string, error) {
		out, _, err := runCmd(t, cmdImport, "--imap", addr, "--user", alice.Address, "--password-file", pw, "--folder", "Old", "mbox", path)
		return out, err
	}
	// Run 1: the connection drops as the node answers the third APPEND.
	p := newCutProxy(t, alice.IMAP, "", 0, "APPENDUID", 3)
	if out, err := run(p); err == nil {
		t.Fatalf("an import cut after the third APPEND succeeded:\n%s", out)
	}
	// The node has the third message; the importer never heard so.
	if got := folderMessages(t, alice.IMAP, alice.Address, alice.Password, "Old"); got["m3"].n != 1 || len(got) != 3 {
		t.Fatalf("after the first run the folder holds %v, want m1 to m3", got)
	}
	// Run 2: the connection drops before the third APPEND of this run
	// (message 6) reaches the node.
	p = newCutProxy(t, alice.IMAP, " APPEND ", 3, "", 0)
	if out, err := run(p); err == nil {
		t.Fatalf("an import cut before an APPEND succeeded:\n%s", out)
	}
	if got := folderMessages(t, alice.IMAP, alice.Address, alice.Password, "Old"); got["m3"].n != 1 || got["twin"].n != 2 || len(got) != 4 {
		t.Fatalf("after the second run the folder holds %v, want m1 to m3 and the twins", got)
	}
	out, err := run(alice.IMAP)
	if err != nil || !strings.Contains(out, "imported 3 messages (5 already imported before)") {
		t.Fatalf("the resumed import: %v\n%s", err, out)
	}
	got := folderMessages(t, alice.IMAP, alice.Address, alice.Password, "Old")
	for _, s := range subjects {
		want := 1
		if s == "twin" {
			want = 2
		}
		if got[s].n != want {
			t.Errorf("%s: %d in the folder, want %d", s, got[s].n, want)
		}
	}
	if len(got) != len(subjects)-1 {
		t.Errorf("the folder holds %v", got)
	}
	if d := got["m8"].date; !d.Equal(time.Date(2006, 1, 2, 15, 4, 7, 0, time.UTC)) {
		t.Errorf("m8's INTERNALDATE %v", d)
	}
}

// newCutProxy forwards one IMAP connection to addr until the nth line
// from the client containing toServer (it is not forwarded), or the nth
// line from the server containing toClient (not forwarded either); then
// it closes both sides, as a killed importer or a lost network would.
func newCutProxy(t *testing.T, addr, toServer string, nServer int, toClient string, nClient int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", addr)
		if err != nil {
			client.Close()
			return
		}
		pipe := func(from, to net.Conn, match string, n int) {
			defer client.Close()
			defer server.Close()
			r := bufio.NewReader(from)
			seen := 0
			for {
				line, err := r.ReadString('\n')
				if match != "" && strings.Contains(line, match) {
					if seen++; seen == n {
						return
					}
				}
				if _, werr := io.WriteString(to, line); werr != nil || err != nil {
					return
				}
			}
		}
		go pipe(client, server, toServer, nServer)
		pipe(server, client, toClient, nClient)
	}()
	return ln.Addr().String()
}

func TestProgress(t *testing.T) {
	if got, want := progressBar(500, 1000, 10), "[#####     ]  50% 500/1000"; got != want {
		t.Errorf("progressBar: %q, want %q", got, want)
	}
	if got, want := progressBar(3, 3, 4), "[####] 100% 3/3"; got != want {
		t.Errorf("progressBar: %q, want %q", got, want)
	}
	// Not a terminal: a line each tenth of the way.
	var b strings.Builder
	p := newProgress(&b, 40)
	for i := 1; i <= 40; i++ {
		p.update(i)
	}
	p.stop()
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 10 || lines[0] != "4/40 messages (10%)" || lines[9] != "40/40 messages (100%)" || strings.Contains(b.String(), "\r") {
		t.Errorf("progress lines:\n%s", b.String())
	}
	// A terminal: one bar, redrawn in place as the percentage changes,
	// and a line end when it stops.
	b.Reset()
	p = &progress{w: &b, total: 200, tty: true, shown: -1}
	for i := 1; i <= 200; i++ {
		p.update(i)
	}
	p.stop()
	// Draws at 0% to 100%: 101, each after a carriage return.
	draws := strings.Split(b.String(), "\r")[1:]
	if len(draws) != 101 || draws[50] != progressBar(100, 200, 30) || draws[100] != progressBar(200, 200, 30)+"\n" {
		t.Errorf("%d draws, at 50%% %q, the last %q", len(draws), draws[50], draws[100])
	}
}

func TestMboxStatus(t *testing.T) {
	for _, c := range []struct {
		in, out string
		flags   []imap.Flag
	}{
		{"Subject: a\r\nStatus: RO\r\nX-Status: AFDT\r\n\r\nbody\r\n", "Subject: a\r\n\r\nbody\r\n",
			[]imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft}},
		{"status: O\r\nSubject: b\r\n\r\nStatus: R\r\n", "Subject: b\r\n\r\nStatus: R\r\n", nil},
		// No blank line: the fields stay, so the message is not emptied.
		{"Status: R\r\n", "Status: R\r\n", []imap.Flag{imap.FlagSeen}},
		// No header: the body's lines are no fields.
		{"\r\nStatus: R\r\n", "\r\nStatus: R\r\n", nil},
	} {
		data, flags := mboxStatus([]byte(c.in))
		if string(data) != c.out || !slices.Equal(flags, c.flags) {
			t.Errorf("mboxStatus(%q) = %q %v, want %q %v", c.in, data, flags, c.out, c.flags)
		}
	}
}
