package smtpd_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/node"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/post"
	"github.com/epost-mail/epost/internal/smtpd"
	"github.com/epost-mail/epost/internal/store"
	"github.com/epost-mail/epost/internal/transport"
)

const (
	alice = "alice@example.org"
	bob   = "bob@example.org"
)

// passwords is the test's Auth: username = address.
type passwords map[string]string

func (p passwords) Check(username, password string) (string, bool) {
	want, ok := p[username]
	return username, ok && want == password
}

var users = passwords{alice: "alice-pw", bob: "bob-pw"}

func waitUntil(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startNodes starts size real nodes on loopback, edit applied to each
// one's configuration, and waits until they form one ring.
func startNodes(t testing.TB, size int, edit func(*node.Config)) (*community, *identity.CA) {
	ca, err := identity.NewCA(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := &community{}
	for i := range size {
		key, err := identity.GenerateNodeKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.IssueNode(rand.Reader, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		cfg := node.DefaultConfig()
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.Key, cfg.Cert, cfg.CA = key, cert, ca.Public()
		cfg.Overlay.MinTimeout = env.Second // several nodes share this process
		cfg.DataDir = filepath.Join(dir, fmt.Sprintf("node%d", i))
		cfg.Log = env.Discard
		cfg.Post = post.DefaultConfig()
		cfg.Post.PollPeriod = 2 * env.Second // a lost push costs seconds, not minutes
		if i > 0 {
			cfg.Bootstrap = []env.Addr{c.nodes[0].Addr()}
		}
		if edit != nil {
			edit(&cfg)
		}
		n, err := node.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
	}
	waitUntil(t, "ring settled", 60*time.Second, func() bool {
		for _, n := range c.nodes {
			ok := false
			if err := n.Do(func() { ok = n.Overlay().Active() && n.Overlay().Leaf().Len() == len(c.nodes)-1 }); err != nil || !ok {
				return false
			}
		}
		return true
	})
	return c, ca
}

// addUser has n serve a new user addr and waits until the mailbox is
// loaded.
func addUser(t testing.TB, ca *identity.CA, n *node.Node, addr string) {
	keys, cert, err := ca.NewUser(rand.Reader, addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.AddUser(keys, cert, 90*time.Second); err != nil {
		t.Fatal(err)
	}
}

// community is three real nodes on loopback, alice served by nodes[1]
// and bob by nodes[2]; extra users by nodes[0] and nodes[2] in turn.
type community struct {
	nodes []*node.Node
}

func startCommunity(t testing.TB, extra ...string) *community {
	c, ca := startNodes(t, 3, nil)
	for i, addr := range append([]string{alice, bob}, extra...) {
		n := c.nodes[2*(i%2)] // extra users: nodes[0], nodes[2], ...
		switch i {
		case 0:
			n = c.nodes[1]
		case 1:
			n = c.nodes[2]
		}
		addUser(t, ca, n, addr)
	}
	// Each user's certificate is found from the other's node.
	type query struct {
		n    *node.Node
		addr string
	}
	queries := []query{{c.nodes[1], bob}, {c.nodes[2], alice}}
	for _, e := range extra {
		queries = append(queries, query{c.nodes[1], e})
	}
	for _, q := range queries {
		waitUntil(t, q.addr+" published", 60*time.Second, func() bool {
			found := make(chan bool, 1)
			if err := q.n.Do(func() { q.n.Mail().LookupUser(q.addr, func(ok bool, _ error) { found <- ok }) }); err != nil {
				return false
			}
			select {
			case ok := <-found:
				return ok
			case <-time.After(30 * time.Second):
				return false
			}
		})
	}
	return c
}

// serveSMTP runs a submission server for n's users on 127.0.0.1.
func serveSMTP(t testing.TB, n *node.Node, edit func(*smtpd.Config)) (*smtpd.Server, string) {
	cfg := smtpd.Config{Loop: n, Mail: n.Mail, Auth: users, Domains: []string{"example.org"}, Log: env.Discard}
	if edit != nil {
		edit(&cfg)
	}
	srv := smtpd.New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, ln.Addr().String()
}

// inbox returns the messages in addr's INBOX on n (nil if not loaded).
func inbox(t testing.TB, n *node.Node, addr string) []*post.Message {
	var out []*post.Message
	if err := n.Do(func() {
		a := n.Mail().User(addr)
		if a == nil {
			return
		}
		if f, ok := a.Folder("INBOX"); ok {
			out = f.Messages()
		}
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func fetch(t testing.TB, n *node.Node, addr string, uid uint32) []byte {
	t.Helper()
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	if err := n.Do(func() {
		f, _ := n.Mail().User(addr).Folder("INBOX")
		f.Fetch(uid, func(b []byte, err error) { ch <- res{b, err} })
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("fetch %s UID %d: %v", addr, uid, r.err)
		}
		return r.b
	case <-time.After(60 * time.Second):
		t.Fatalf("fetch %s UID %d: no answer", addr, uid)
	}
	return nil
}

func stats(t testing.TB, n *node.Node) post.Stats {
	var s post.Stats
	if err := n.Do(func() { s = n.Mail().Stats() }); err != nil {
		t.Fatal(err)
	}
	return s
}

// smtplibScript drives a submission server with Python's smtplib and
// prints, as JSON, each step's reply code: 250 when the step succeeded.
const smtplibScript = `
import json, smtplib, sys
port = int(sys.argv[1])
msg = open(sys.argv[2], 'rb').read()
big = open(sys.argv[3], 'rb').read()
A, B = 'alice@example.org', 'bob@example.org'
out = {}

def conn(login=True, pw='alice-pw'):
    s = smtplib.SMTP('127.0.0.1', port, timeout=120)
    if login:
        s.login(A, pw)
    return s

def step(name, f):
    try:
        f()
        out[name] = [250, '']
    except smtplib.SMTPRecipientsRefused as e:
        code, m = list(e.recipients.values())[0]
        out[name] = [code, m.decode(errors='replace')]
    except smtplib.SMTPResponseException as e:
        out[name] = [e.smtp_code, e.smtp_error.decode(errors='replace')]

def send(data=msg, frm=A, to=(B,), login=True, pw='alice-pw'):
    def f():
        s = conn(login, pw)
        try:
            s.sendmail(frm, list(to), data, mail_options=['BODY=8BITMIME'])
        finally:
            s.close()
    return f

def login_mech():
    s = smtplib.SMTP('127.0.0.1', port, timeout=120)
    s.ehlo()
    s.user, s.password = A, 'alice-pw'
    s.auth('LOGIN', s.auth_login)
    s.mail(A)
    s.rset()
    s.quit()

step('send', send())
step('resend', send())
step('wrong_password', send(pw='guess'))
step('login_mechanism', login_mech)
step('mail_from_other', send(frm=B))
step('rcpt_unknown', send(to=('nobody@example.org',)))
step('rcpt_outside', send(to=('victim@elsewhere.example',)))
step('unauthenticated', send(login=False))
step('oversized', send(data=big))
print(json.dumps(out))
`

// TestSubmissionEndToEnd: real clients (Python's smtplib, swaks) submit
// to a node's SMTP server; the message reaches the recipient's INBOX on
// another node exactly once, byte for byte, and everything a submission
// server must refuse is refused.
func TestSubmissionEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a community of real nodes")
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is required for this test (smtplib)")
	}
	c := startCommunity(t)
	aliceSrv, aliceAddr := serveSMTP(t, c.nodes[1], func(c *smtpd.Config) { c.MaxMessageBytes = 64 << 10 })
	_, port, _ := net.SplitHostPort(aliceAddr)

	dir := t.TempDir()
	msg := []byte("From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: over epost\r\n" +
		"Message-ID: <smtplib-1@example.org>\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n\r\nHi Bob,\r\n.a line starting with a dot\r\nGr\xc3\xbc\xc3\x9fe\r\n")
	big := append([]byte("From: alice@example.org\r\nSubject: big\r\n\r\n"), bytes.Repeat([]byte("0123456789abcdef0123456789abcdef\r\n"), 3000)...)
	msgFile, bigFile := filepath.Join(dir, "msg.eml"), filepath.Join(dir, "big.eml")
	if err := os.WriteFile(msgFile, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bigFile, big, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(python, "-c", smtplibScript, port, msgFile, bigFile).CombinedOutput()
	if err != nil {
		t.Fatalf("python smtplib: %v\n%s", err, out)
	}
	var got map[string][2]any
	if err := json.Unmarshal(bytes.TrimSpace(out), &got); err != nil {
		t.Fatalf("smtplib output %q: %v", out, err)
	}
	for step, want := range map[string]int{
		"send": 250, "resend": 250, "wrong_password": 535, "login_mechanism": 250, "mail_from_other": 553,
		"rcpt_unknown": 550, "rcpt_outside": 550, "unauthenticated": 530, "oversized": 552,
	} {
		r, ok := got[step]
		if !ok {
			t.Errorf("smtplib step %s missing", step)
			continue
		}
		if code, _ := r[0].(float64); int(code) != want {
			t.Errorf("smtplib step %s: got %v %v, want %d", step, r[0], r[1], want)
		}
	}
	// smtplib tries PLAIN, then LOGIN, with the wrong password: two
	// failures counted against 127.0.0.1, still below the lockout.
	if st := aliceSrv.Stats(); st.Accepted != 2 || st.AuthFailed != 2 || st.AuthLocked != 0 {
		t.Errorf("server stats %+v: want 2 accepted, 2 failed logins, no lockout", st)
	}

	// Sent twice, kept once: the retry carried the same message id.
	bobNode := c.nodes[2]
	waitUntil(t, "both copies processed at bob's node", 90*time.Second, func() bool {
		s := stats(t, bobNode)
		return s.Delivered >= 1 && s.Duplicates >= 1
	})
	msgs := inbox(t, bobNode, bob)
	if len(msgs) != 1 {
		t.Fatalf("bob's INBOX has %d messages, want 1", len(msgs))
	}
	if len(msgs[0].Flags) != 0 {
		t.Errorf("flags %v on a message from its signed sender", msgs[0].Flags)
	}
	if b := fetch(t, bobNode, bob, msgs[0].UID); !bytes.Equal(b, msg) {
		t.Fatalf("bob got\n%q\nwant\n%q", b, msg)
	}

	// The second client: swaks (make test installs it), else Go's
	// net/smtp, from bob's node back to alice.
	_, bobAddr := serveSMTP(t, bobNode, nil)
	reply := []byte("From: bob@example.org\r\nTo: alice@example.org\r\nSubject: Re: over epost\r\n\r\nGot it.\r\n")
	if swaks, err := exec.LookPath("swaks"); err == nil {
		swaksChecks(t, swaks, bobAddr, reply, filepath.Join(dir, "reply.eml"))
	} else {
		t.Logf("swaks not installed (scripts/ensure-tools.sh swaks): using net/smtp as the second client")
		netSMTPChecks(t, bobAddr, reply)
	}
	aliceNode := c.nodes[1]
	waitUntil(t, "the reply in alice's INBOX", 90*time.Second, func() bool { return len(inbox(t, aliceNode, alice)) >= 1 })
	msgs = inbox(t, aliceNode, alice)
	if len(msgs) != 1 {
		t.Fatalf("alice's INBOX has %d messages, want 1", len(msgs))
	}
	if b := fetch(t, aliceNode, alice, msgs[0].UID); !bytes.Equal(b, reply) {
		t.Fatalf("alice got\n%q\nwant\n%q", b, reply)
	}
}

// swaksPipelined matches a transcript of swaks pipelining. swaks marks
// no line as pipelined, and --pipeline quietly falls back to one command
// at a time when EHLO lists no PIPELINING; what shows that it
// pipelined is the order of its transcript: EHLO's reply lists
// PIPELINING, then MAIL, RCPT and DATA go out together (one write) before
// any of their replies is read, where lock-step would show each reply
// right after its command.
var swaksPipelined = regexp.MustCompile(`(?m)^ -> MAIL FROM:.*\n -> RCPT TO:.*\n -> DATA\n<-  250 .*\n<-  250 .*\n<-  354 `)

// swaksChecks: a pipelined (see swaksPipelined), AUTH LOGIN submission
// succeeds; relaying without AUTH, or to outside the community without a
// gateway, does not.
func swaksChecks(t *testing.T, swaks, addr string, reply []byte, file string) {
	host, port, _ := net.SplitHostPort(addr)
	// swaks ends the data with CRLF.CRLF itself.
	if err := os.WriteFile(file, bytes.TrimSuffix(reply, []byte("\r\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		base := []string{"--server", host, "--port", port, "--timeout", "120", "--helo", "client.example"}
		out, err := exec.Command(swaks, append(base, args...)...).CombinedOutput()
		return string(out), err
	}
	out, err := run("--pipeline", "--auth", "LOGIN", "--auth-user", bob, "--auth-password", "bob-pw",
		"--from", bob, "--to", alice, "--data", "@"+file)
	if err != nil {
		t.Fatalf("swaks send: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`(?m)^<-  250[- ]PIPELINING\r?$`).MatchString(out) {
		t.Fatalf("swaks send: EHLO did not list PIPELINING\n%s", out)
	}
	if !swaksPipelined.MatchString(out) {
		t.Fatalf("swaks send: MAIL, RCPT and DATA not pipelined\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^ -> \.\n<-  250 `).MatchString(out) {
		t.Fatalf("swaks send: no 250 after the data\n%s", out)
	}
	out, err = run("--from", bob, "--to", "victim@elsewhere.example", "--data", "@"+file)
	if err == nil || !strings.Contains(out, "530") {
		t.Fatalf("swaks unauthenticated relay not refused with 530: %v\n%s", err, out)
	}
	out, err = run("--auth", "PLAIN", "--auth-user", bob, "--auth-password", "bob-pw",
		"--from", bob, "--to", "victim@elsewhere.example", "--data", "@"+file)
	if err == nil || !strings.Contains(out, "550") || !strings.Contains(out, "Relay not configured") {
		t.Fatalf("swaks authenticated relay outside the community not refused with 550: %v\n%s", err, out)
	}
}

// netSMTPChecks is swaksChecks with Go's net/smtp client.
func netSMTPChecks(t *testing.T, addr string, reply []byte) {
	host, _, _ := net.SplitHostPort(addr)
	if err := smtp.SendMail(addr, smtp.PlainAuth("", bob, "bob-pw", host), bob, []string{alice}, reply); err != nil {
		t.Fatalf("net/smtp send: %v", err)
	}
	if err := smtp.SendMail(addr, nil, bob, []string{"victim@elsewhere.example"}, reply); err == nil || !strings.Contains(err.Error(), "530") {
		t.Fatalf("net/smtp unauthenticated relay: %v, want 530", err)
	}
	err := smtp.SendMail(addr, smtp.PlainAuth("", bob, "bob-pw", host), bob, []string{"victim@elsewhere.example"}, reply)
	if err == nil || !strings.Contains(err.Error(), "550") {
		t.Fatalf("net/smtp relay outside the community: %v, want 550", err)
	}
}

// loginAlice connects a go-smtp client to addr, logged in as alice; the
// connection closes when the test ends.
func loginAlice(t testing.TB, addr string) *gosmtp.Client {
	t.Helper()
	cl, err := gosmtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	if err := cl.Auth(sasl.NewPlainClient("", alice, "alice-pw")); err != nil {
		t.Fatal(err)
	}
	return cl
}

// TestFullDiskIsTemporary: on a node whose disk is full (a ring of one, so
// its own replica decides), a real SMTP client's message gets 452 4.3.1
// and nothing is stored; once there is room the client's retry gets 250,
// and the recipient receives the message exactly once.
func TestFullDiskIsTemporary(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real node")
	}
	faults := &store.Faults{}
	c, ca := startNodes(t, 1, func(cfg *node.Config) {
		cfg.Store = store.DefaultConfig()
		cfg.Store.Faults = faults
	})
	n := c.nodes[0]
	addUser(t, ca, n, alice)
	addUser(t, ca, n, bob)
	srv, addr := serveSMTP(t, n, nil)
	cl := loginAlice(t, addr)
	msg := []byte("From: alice@example.org\r\nTo: bob@example.org\r\nSubject: while the disk is full\r\n\r\nhello\r\n")

	faults.Fail(syscall.ENOSPC)
	err := cl.SendMail(alice, []string{bob}, bytes.NewReader(msg))
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) || se.Code != 452 || se.EnhancedCode != (gosmtp.EnhancedCode{4, 3, 1}) {
		t.Fatalf("DATA on a full disk: %v, want 452 4.3.1", err)
	}
	faults.Fail(nil)
	if err := cl.SendMail(alice, []string{bob}, bytes.NewReader(msg)); err != nil {
		t.Fatalf("the retry once there is room: %v", err)
	}
	waitUntil(t, "delivery", 60*time.Second, func() bool {
		var pending int
		if err := n.Do(func() { pending = n.Mail().Pending() }); err != nil {
			t.Fatal(err)
		}
		return len(inbox(t, n, bob)) > 0 && pending == 0
	})
	got := inbox(t, n, bob)
	if len(got) != 1 || !bytes.Equal(fetch(t, n, bob, got[0].UID), msg) {
		t.Fatalf("bob's INBOX holds %d messages, want this one once", len(got))
	}
	if st := stats(t, n); st.Delivered != 1 || st.Duplicates != 0 {
		t.Fatalf("post stats %+v", st)
	}
	if st := srv.Stats(); st.TempFailed != 1 || st.Accepted != 1 {
		t.Fatalf("smtp stats %+v", st)
	}
	if s := n.Status(); s.Storage.WriteErrors == 0 {
		t.Fatal("the failed writes were not counted")
	}
}

// TestUnreachableReplicasAreTemporary: on three real nodes, with the
// submitting node cut off from the other two (two of every object's three
// replicas unreachable, so no majority can store the message), a real
// SMTP client's DATA gets 451, never 250, and bob has nothing; once the
// links are back, the client's retry gets 250 and bob receives the
// message exactly once.
func TestUnreachableReplicasAreTemporary(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three real nodes")
	}
	var links []*transport.Faults
	c, ca := startNodes(t, 3, func(cfg *node.Config) {
		f := &transport.Faults{}
		links = append(links, f)
		cfg.Faults = f
		cfg.Past = past.DefaultConfig()
		cfg.Past.InsertTimeout = 3 * env.Second // fail in seconds, not the default 30
	})
	addUser(t, ca, c.nodes[1], alice)
	addUser(t, ca, c.nodes[2], bob)
	sub, bobNode := c.nodes[1], c.nodes[2]
	waitUntil(t, "bob published", 60*time.Second, func() bool {
		found := make(chan bool, 1)
		if err := sub.Do(func() { sub.Mail().LookupUser(bob, func(ok bool, _ error) { found <- ok }) }); err != nil {
			return false
		}
		return <-found
	})
	srv, addr := serveSMTP(t, sub, nil)
	cl := loginAlice(t, addr)
	msg := []byte("From: alice@example.org\r\nTo: bob@example.org\r\nSubject: while cut off\r\n\r\nhello\r\n")
	if err := cl.Mail(alice, nil); err != nil {
		t.Fatal(err)
	}
	if err := cl.Rcpt(bob, nil); err != nil {
		t.Fatal(err)
	}
	// Both ends of both links, so that every side sees its sends fail.
	links[1].Block(c.nodes[0].Addr(), c.nodes[2].Addr())
	links[0].Block(sub.Addr())
	links[2].Block(sub.Addr())
	w, err := cl.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(msg); err != nil {
		t.Fatal(err)
	}
	err = w.Close()
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 {
		t.Fatalf("DATA with two of three replicas unreachable: %v, want 451", err)
	}
	if st := srv.Stats(); st.Accepted != 0 || st.TempFailed != 1 {
		t.Fatalf("smtp stats %+v", st)
	}
	for _, f := range links {
		f.UnblockAll()
	}
	// The client retries until the community has healed.
	waitUntil(t, "a 250 for the retry", 90*time.Second, func() bool {
		return cl.SendMail(alice, []string{bob}, bytes.NewReader(msg)) == nil
	})
	waitUntil(t, "delivery", 60*time.Second, func() bool { return len(inbox(t, bobNode, bob)) > 0 })
	got := inbox(t, bobNode, bob)
	if len(got) != 1 || !bytes.Equal(fetch(t, bobNode, bob, got[0].UID), msg) {
		t.Fatalf("bob's INBOX holds %d messages, want this one once", len(got))
	}
}

// BenchmarkSubmit10KiB measures SMTP acceptance of 10 KiB messages on one
// node of a three-node community: each 250 means the body and the
// notification are durably stored at their replica sets. One client
// connection, one message at a time, each to one of 16 members in turn:
// POST's flood limits (post.DefaultLimits) allow a burst of 100
// notifications per recipient from one node, so runs of more than 1600
// messages end in (correct) 451 replies.
func BenchmarkSubmit10KiB(b *testing.B) {
	var rcpts []string
	for i := range 16 {
		rcpts = append(rcpts, fmt.Sprintf("member%02d@example.org", i))
	}
	c := startCommunity(b, rcpts...)
	_, addr := serveSMTP(b, c.nodes[1], func(c *smtpd.Config) { c.SendLimit = smtpd.SendLimit{PerMinute: 1e6, Burst: 1e6} })
	cl := loginAlice(b, addr)
	body := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n"), 10240/66)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		to := rcpts[i%len(rcpts)]
		msg := append([]byte(fmt.Sprintf("From: alice@example.org\r\nTo: %s\r\nSubject: bench %d\r\n\r\n", to, i)), body...)
		if err := cl.SendMail(alice, []string{to}, bytes.NewReader(msg)); err != nil {
			b.Fatalf("message %d: %v", i, err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
