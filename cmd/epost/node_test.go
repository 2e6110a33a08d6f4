package main

import (
	"context"
	"io"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/epost-mail/epost/internal/post"
)

// TestNodeWalkthrough follows the README's community walk-through with two
// `epost node`s on loopback: CA, node certificates, users with passwords,
// `epost init`, the first node starting the ring, the second joining it,
// and mail from alice on one node to bob on the other, by SMTP and IMAP.
func TestNodeWalkthrough(t *testing.T) {
	dir := newCommunity(t, []string{"n1", "n2"}, []string{"alice@example.org", "bob@example.org"}, "correct horse battery")
	config := func(name, user, boot string) string {
		return loopbackConfig(t, dir, name, boot, []string{user})
	}
	type running struct {
		out, errOut syncBuffer
		exited      chan error
		cancel      context.CancelFunc
	}
	start := func(cfg string) *running {
		r := &running{exited: make(chan error, 1)}
		ctx, cancel := context.WithCancel(t.Context())
		r.cancel = cancel
		go func() { r.exited <- runNode(ctx, []string{"--config", cfg}, &r.out, &r.errOut) }()
		t.Cleanup(func() {
			cancel()
			if err := <-r.exited; err != nil {
				t.Errorf("node: %v\n%s", err, r.errOut.String())
			}
		})
		return r
	}
	cfgA := config("n1", "alice@example.org", "")
	// Node 1 is also the community's gateway (alice stands in for the
	// gateway user).
	f, err := os.OpenFile(cfgA, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("\n[gateway]\nuser = \"alice@example.org\"\nmx = \"127.0.0.1:0\"\nhostname = \"mx.example.org\"\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	a := start(cfgA)
	awaitOutput(t, &a.out, readyRE, 60*time.Second, a.exited)
	boot := addrRE.FindStringSubmatch(a.out.String())[1]
	b := start(config("n2", "bob@example.org", boot))
	awaitOutput(t, &b.out, readyRE, 60*time.Second, b.exited)

	smtpA := smtpRE.FindStringSubmatch(a.out.String())[1]
	imapB := imapRE.FindStringSubmatch(b.out.String())[1]
	msg := "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: across the ring\r\n\r\nHi Bob.\r\n"
	if err := submit(smtpA, "alice@example.org", "correct horse battery", "bob@example.org", msg); err != nil {
		t.Fatalf("alice sends: %v", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !hasMail(imapB, "bob@example.org", "correct horse battery", "across the ring") {
		if time.Now().After(deadline) {
			t.Fatalf("bob never saw alice's message\nnode 1:\n%s\nnode 2:\n%s", a.errOut.String(), b.errOut.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Python's smtplib and imaplib, as independent clients, drive one
	// whole session across the two nodes: bob idles on node 2's INBOX,
	// alice sends with smtplib on node 1, the new mail is pushed to bob's
	// IDLE (no polling: the client sends nothing until it hears EXISTS),
	// and bob reads it, flags it, searches, moves it to Archive and
	// expunges it. imaplib has idle() only from Python 3.14, so IDLE
	// (RFC 2177) is spoken on imaplib's own connection.
	imapA := imapRE.FindStringSubmatch(a.out.String())[1]
	smtpB := smtpRE.FindStringSubmatch(b.out.String())[1]
	pyScript := `
import imaplib, re, smtplib, sys
smtp_a, imap_b, smtp_b, imap_a = sys.argv[1:5]
pw = "correct horse battery"
def hp(a):
    h, p = a.rsplit(":", 1)
    return h, int(p)
def ok(res, what):
    typ, data = res
    if typ != "OK":
        sys.exit("%s: %s %r" % (what, typ, data))
    return data
m = imaplib.IMAP4(*hp(imap_b)); ok(m.login("bob@example.org", pw), "login")
ok(m.select("INBOX"), "select")
st = ok(m.status("INBOX", "(UIDNEXT)"), "status")[0]
uidnext = int(re.search(rb"UIDNEXT (\d+)", st).group(1))
tag = m._new_tag()
m.send(tag + b" IDLE\r\n")
line = m.readline()
assert line.startswith(b"+"), line
# Only now, with bob idling, does alice send.
s = smtplib.SMTP(*hp(smtp_a)); s.login("alice@example.org", pw)
s.sendmail("alice@example.org", ["bob@example.org"], "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: from python\r\n\r\nhello bob\r\n")
s.quit()
m.sock.settimeout(120)
while not re.match(rb"\* \d+ EXISTS", line):
    line = m.readline()
m.send(b"DONE\r\n")
while not line.startswith(tag):
    line = m.readline()
assert line.startswith(tag + b" OK"), line
m.sock.settimeout(None)
# What IDLE announced is alice's message.
uids = ok(m.uid("SEARCH", None, "UID", "%d:*" % uidnext, "SUBJECT", '"from python"'), "search new")[0].split()
assert len(uids) == 1 and int(uids[0]) >= uidnext, uids
uid = uids[0]
typ, body = m.uid("FETCH", uid, "(BODY.PEEK[TEXT])")
assert typ == "OK" and b"hello bob" in body[0][1], body
ok(m.uid("STORE", uid, "+FLAGS", "(\\Flagged)"), "store")
assert uid in ok(m.uid("SEARCH", None, "FLAGGED"), "search flagged")[0].split()
ok(m.uid("MOVE", uid, "Archive"), "move")
assert uid not in ok(m.uid("SEARCH", None, "ALL"), "search inbox")[0].split()
ok(m.select("Archive"), "select archive")
data = ok(m.search(None, 'SUBJECT "from python"'), "search archive")
assert data[0], "not in Archive"
ok(m.store(data[0].split()[0], "+FLAGS", "\\Deleted"), "store deleted")
ok(m.expunge(), "expunge")
assert not ok(m.search(None, "ALL"), "search all")[0], "Archive is not empty"
m.logout()
print("python session ok")
`
	py, err := exec.Command("python3", "-c", pyScript, smtpA, imapB, smtpB, imapA).CombinedOutput()
	if err != nil || !strings.Contains(string(py), "python session ok") {
		t.Fatalf("python session: %v\n%s", err, py)
	}

	// The MX takes mail for members only and relays nothing.
	mx := regexp.MustCompile(`(?m)^MX on (\S+)$`).FindStringSubmatch(a.out.String())
	if mx == nil {
		t.Fatalf("the gateway node printed no MX address:\n%s", a.out.String())
	}
	c, err := smtp.Dial(mx[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("someone@elsewhere.example"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("victim@elsewhere.example"); err == nil || !strings.Contains(err.Error(), "550") {
		t.Fatalf("relay through the MX: %v, want 550", err)
	}
	if err := c.Rcpt("nobody@example.org"); err == nil || !strings.Contains(err.Error(), "550") {
		t.Fatalf("unknown member at the MX: %v, want 550", err)
	}
	if err := c.Rcpt("bob@example.org"); err != nil {
		t.Fatalf("a member at the MX: %v", err)
	}
	c.Close()
	// A wrong password is refused.
	if err := submit(smtpA, "alice@example.org", "wrong password", "bob@example.org", msg); err == nil {
		t.Fatal("a wrong password was accepted")
	}
}

// What `epost node` prints on standard output as it comes up.
var (
	addrRE   = regexp.MustCompile(`(?m)^node \S+ at (\S+)$`)
	imapRE   = regexp.MustCompile(`(?m)^IMAP on (\S+)$`)
	smtpRE   = regexp.MustCompile(`(?m)^SMTP on (\S+)$`)
	statusOn = regexp.MustCompile(`(?m)^status page: http://(\S+)/$`)
)

// newCommunity makes a data directory with a community CA, certificates
// for the named nodes, and the users, each with password pw (at a low
// scrypt work factor, for speed). It returns the directory.
func newCommunity(t *testing.T, nodes, users []string, pw string) string {
	t.Helper()
	dir := t.TempDir()
	must := func(f func([]string, io.Writer, io.Writer) error, args ...string) {
		t.Helper()
		if _, errOut, err := runCmd(t, f, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut)
		}
	}
	must(cmdCA, "init", "--dir", dir)
	for _, n := range nodes {
		must(cmdCA, "issue-node", "--dir", dir, "--name", n)
	}
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		must(cmdUser, "new", "--dir", dir, "--scrypt-work-factor", "10", u)
		must(cmdUser, "passwd", "--dir", dir, "--password-file", pwFile, u)
	}
	return dir
}

// loopbackConfig writes node name's configuration with `epost init` (boot
// may be empty) and rewrites it for a test on loopback: libp2p, IMAP and
// SMTP on ephemeral ports, no status page, warnings only. edits are
// old, new pairs of text to replace in the result.
func loopbackConfig(t *testing.T, dir, name, boot string, users []string, edits ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name+".toml")
	args := []string{"--dir", dir, "--node", name, "--out", out}
	for _, u := range users {
		args = append(args, "--user", u)
	}
	if boot != "" {
		args = append(args, "--bootstrap", boot)
	}
	if _, errOut, err := runCmd(t, cmdInit, args...); err != nil {
		t.Fatalf("init %v: %v\n%s", args, err, errOut)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.NewReplacer(
		`listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]`, `listen = ["/ip4/127.0.0.1/tcp/0"]`,
		`imap = "127.0.0.1:1143"`, `imap = "127.0.0.1:0"`,
		`smtp = "127.0.0.1:1587"`, `smtp = "127.0.0.1:0"`,
		`status = "127.0.0.1:8025"`, `status = ""`,
		`log = "info"`, `log = "warn"`,
	).Replace(string(b))
	s = strings.NewReplacer(edits...).Replace(s)
	if err := os.WriteFile(out, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// imapSession connects to the IMAP server at addr and logs user in; the
// whole session must end within a minute.
func imapSession(addr, user, pass string) (*imapclient.Client, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(time.Minute))
	cl := imapclient.New(conn, nil)
	if err := cl.Login(user, pass).Wait(); err != nil {
		cl.Close()
		return nil, err
	}
	return cl, nil
}

func hasMail(addr, user, pass, subject string) bool {
	cl, err := imapSession(addr, user, pass)
	if err != nil {
		return false
	}
	defer cl.Close()
	if _, err := cl.Select("INBOX", nil).Wait(); err != nil {
		return false
	}
	d, err := cl.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: subject}}}, nil).Wait()
	return err == nil && len(d.AllUIDs()) > 0
}

// submit sends one message by SMTP with AUTH PLAIN, without STARTTLS (the
// node's certificate is self-signed; on loopback the clear is allowed).
// The whole session must end within two minutes.
func submit(addr, user, pass, to, msg string) error {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	host, _, _ := net.SplitHostPort(addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Auth(smtp.PlainAuth("", user, pass, "127.0.0.1")); err != nil {
		return err
	}
	if err := c.Mail(user); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// TestUserQuotaConfig: epost init's config sets each user's quota to the
// default, and a negative quota is refused before anything starts.
func TestUserQuotaConfig(t *testing.T) {
	dir := t.TempDir()
	var cfg nodeConfig
	if _, err := toml.DecodeFile(loopbackConfig(t, dir, "n1", "", nil), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.UserQuota == nil || *cfg.UserQuota != post.DefaultQuota {
		t.Fatalf("user_quota from init: %v, want %d", cfg.UserQuota, post.DefaultQuota)
	}
	bad := loopbackConfig(t, dir, "n1", "", nil, "user_quota = 1073741824", "user_quota = -1")
	_, _, err := runCmd(t, func(args []string, stdout, stderr io.Writer) error {
		return runNode(t.Context(), args, stdout, stderr)
	}, "--config", bad)
	if err == nil || !strings.Contains(err.Error(), "user_quota -1") {
		t.Fatalf("a negative quota: %v", err)
	}
}
