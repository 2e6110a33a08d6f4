package gateway_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/smtp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/gateway"
)

// syncLoop is an event loop that runs f at once, one at a time.
type syncLoop struct{ mu sync.Mutex }

func (l *syncLoop) Do(f func()) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f()
	return nil
}

type injection struct {
	gw    string
	rcpts []string
	msg   []byte
}

// fakePost knows members and records injections; failWith makes Inject
// fail.
type fakePost struct {
	members  []string
	injected []injection
	failWith error
}

func (p *fakePost) Inject(gw string, rcpts []string, msg []byte, done func(error)) {
	if p.failWith != nil {
		done(p.failWith)
		return
	}
	p.injected = append(p.injected, injection{gw, rcpts, bytes.Clone(msg)})
	done(nil)
}

func (p *fakePost) LookupUser(addr string, done func(bool, error)) {
	done(slices.Contains(p.members, addr), nil)
}

type fixedFilter float64

func (f fixedFilter) Score([]byte) (float64, error) { return float64(f), nil }

type mx struct {
	srv  *gateway.Server
	addr string
	post *fakePost
	loop *syncLoop
}

// injected returns the fake's injections, read on the loop.
func (m *mx) injected() []injection {
	var out []injection
	m.loop.Do(func() { out = slices.Clone(m.post.injected) })
	return out
}

// startMX serves a gateway for example.org over a fake POST that knows
// alice and bob; sender.example allows 127.0.0.1 by SPF.
func startMX(t *testing.T, edit func(*gateway.Config)) (*mx, *fakeDNS, dkimKey) {
	dns := newFakeDNS()
	dns.setTXT("sender.example", "v=spf1 ip4:127.0.0.1 -all")
	dns.setTXT("_dmarc.sender.example", "v=DMARC1; p=none")
	dns.setTXT("spoofed.example", "v=spf1 ip4:192.0.2.1 -all")
	dns.setTXT("_dmarc.spoofed.example", "v=DMARC1; p=reject")
	k := newDKIMKey(t, dns, "sender.example")
	m := &mx{post: &fakePost{members: []string{"alice@example.org", "bob@example.org"}}, loop: &syncLoop{}}
	cfg := gateway.Config{
		Loop: m.loop, Gateway: "gateway@example.org", Domains: []string{"example.org"},
		Hostname: "mx.example.org", Resolver: dns, Log: env.Discard,
	}
	if edit != nil {
		edit(&cfg)
	}
	m.srv = gateway.NewWithMailer(cfg, m.post)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- m.srv.Serve(ln) }()
	t.Cleanup(func() {
		m.srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	m.addr = ln.Addr().String()
	return m, dns, k
}

// send delivers msg as an Internet MTA would (no AUTH, no TLS).
func send(addr, from string, to []string, msg string) error {
	return smtp.SendMail(addr, nil, from, to, []byte(msg))
}

func code(err error) string {
	if err == nil {
		return "250"
	}
	s := err.Error()
	if len(s) >= 3 {
		return s[:3]
	}
	return s
}

const inMsg = "From: Carol <carol@sender.example>\r\nTo: alice@example.org\r\nSubject: hi\r\n" +
	"Message-ID: <2@sender.example>\r\n\r\nHello.\r\n"

func TestInboundAccepted(t *testing.T) {
	m, _, k := startMX(t, nil)
	signed := k.sign(t, inMsg)
	if err := send(m.addr, "carol@sender.example", []string{"Alice@Example.org"}, signed); err != nil {
		t.Fatal(err)
	}
	inj := m.injected()
	if len(inj) != 1 {
		t.Fatalf("%d injections, want 1", len(inj))
	}
	got := inj[0]
	if got.gw != "gateway@example.org" || !slices.Equal(got.rcpts, []string{"alice@example.org"}) {
		t.Errorf("injected as %s for %v", got.gw, got.rcpts)
	}
	want := "Authentication-Results: mx.example.org;\r\n\tspf=pass smtp.mailfrom=sender.example;\r\n\t" +
		"dkim=pass header.d=sender.example;\r\n\tdmarc=pass header.from=sender.example\r\n"
	if !bytes.HasPrefix(got.msg, []byte(want)) {
		t.Errorf("injected message starts\n%q\nwant\n%q", got.msg[:min(len(got.msg), len(want)+20)], want)
	}
	if !bytes.HasSuffix(got.msg, []byte(signed)) {
		t.Errorf("the original message is not kept as received")
	}
	// A retry (the MTA lost our 250) carries the same bytes, so POST
	// deduplicates it.
	if err := send(m.addr, "carol@sender.example", []string{"alice@example.org"}, signed); err != nil {
		t.Fatal(err)
	}
	if inj := m.injected(); len(inj) != 2 || !bytes.Equal(inj[0].msg, inj[1].msg) {
		t.Errorf("a retry was stamped differently")
	}
	if st := m.srv.Stats(); st.Accepted != 2 || st.Junk != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestInboundRefusesStrangersAndRelaying(t *testing.T) {
	m, _, _ := startMX(t, nil)
	for _, c := range []struct {
		to   string
		want string
	}{
		{"nobody@example.org", "550"},
		{"victim@elsewhere.example", "550"},
		{"alice@example.org.evil.example", "550"},
		{"not an address", "501"}, // go-smtp refuses the syntax
	} {
		err := send(m.addr, "carol@sender.example", []string{c.to}, inMsg)
		if code(err) != c.want {
			t.Errorf("RCPT %s: %v, want %s", c.to, err, c.want)
		}
	}
	if err := send(m.addr, "carol@sender.example", []string{"victim@elsewhere.example"}, inMsg); err == nil ||
		!strings.Contains(err.Error(), "Relay access denied") {
		t.Errorf("relay attempt: %v", err)
	}
	if inj := m.injected(); len(inj) != 0 {
		t.Fatalf("%d messages injected, want none", len(inj))
	}
	if st := m.srv.Stats(); st.RelayRefused != 3 {
		t.Errorf("RelayRefused %d, want 3 (two outside domains, one look-alike)", st.RelayRefused)
	}
}

func TestInboundJunk(t *testing.T) {
	m, _, k := startMX(t, nil)
	// DKIM broken in transit and SPF failing: junk, delivered with the
	// header.
	tampered := strings.Replace(k.sign(t, strings.ReplaceAll(inMsg, "carol@sender.example", "carol@spoofed.example")),
		"Hello.", "Your account is locked.", 1)
	if err := send(m.addr, "carol@spoofed.example", []string{"alice@example.org"}, tampered); err != nil {
		t.Fatal(err)
	}
	inj := m.injected()
	if len(inj) != 1 {
		t.Fatalf("%d injections", len(inj))
	}
	if !bytes.HasPrefix(inj[0].msg, []byte("X-Epost-Junk: yes (score ")) {
		t.Errorf("junk message starts %q", inj[0].msg[:80])
	}
	if st := m.srv.Stats(); st.Junk != 1 {
		t.Errorf("stats %+v", st)
	}

	// An external filter's score counts too.
	m2, _, _ := startMX(t, func(c *gateway.Config) { c.Filter = fixedFilter(10) })
	if err := send(m2.addr, "carol@sender.example", []string{"alice@example.org"}, inMsg); err != nil {
		t.Fatal(err)
	}
	if inj := m2.injected(); len(inj) != 1 || !bytes.HasPrefix(inj[0].msg, []byte("X-Epost-Junk: yes (score 10.0)\r\n")) {
		t.Errorf("filtered message: %q", inj)
	}
}

func TestInboundStripsForgedResults(t *testing.T) {
	m, _, _ := startMX(t, nil)
	forged := "Authentication-Results: mx.example.org; spf=pass\r\n smtp.mailfrom=bank.example\r\n" +
		"X-Epost-Junk: no\r\nAuthentication-Results: other.example; dkim=pass\r\n" + inMsg
	if err := send(m.addr, "carol@sender.example", []string{"alice@example.org"}, forged); err != nil {
		t.Fatal(err)
	}
	msg := string(m.injected()[0].msg)
	if strings.Count(msg, "mx.example.org") != 1 || strings.Contains(msg, "bank.example") || strings.Contains(msg, "X-Epost-Junk") {
		t.Errorf("forged fields survived:\n%s", msg)
	}
	if !strings.Contains(msg, "Authentication-Results: other.example; dkim=pass\r\n") {
		t.Errorf("another server's results were removed:\n%s", msg)
	}
}

func TestInboundTemporaryFailures(t *testing.T) {
	m, dns, _ := startMX(t, nil)
	m.post.failWith = errors.New("no replica set reachable")
	if err := send(m.addr, "carol@sender.example", []string{"alice@example.org"}, inMsg); code(err) != "451" {
		t.Errorf("POST failing: %v, want 451", err)
	}
	m.loop.Do(func() { m.post.failWith = nil })
	dns.mu.Lock()
	dns.temp["sender.example"] = true
	dns.mu.Unlock()
	if err := send(m.addr, "carol@sender.example", []string{"alice@example.org"}, inMsg); code(err) != "451" {
		t.Errorf("DNS failing: %v, want 451", err)
	}
	if inj := m.injected(); len(inj) != 0 {
		t.Errorf("%d injected", len(inj))
	}

	// No POST at all (the node has none yet).
	srv := gateway.New(gateway.Config{Loop: &syncLoop{}, Gateway: "gateway@example.org", Domains: []string{"example.org"}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	if err := send(ln.Addr().String(), "carol@sender.example", []string{"alice@example.org"}, inMsg); code(err) != "451" {
		t.Errorf("no POST: %v, want 451", err)
	}
}

func TestInboundLimits(t *testing.T) {
	m, _, _ := startMX(t, func(c *gateway.Config) {
		c.MessageRate = gateway.Rate{PerMinute: 1e-9, Burst: 2}
		c.MaxMessageBytes = 1024
	})
	big := inMsg + strings.Repeat("0123456789abcdef\r\n", 100)
	if err := send(m.addr, "carol@sender.example", []string{"alice@example.org"}, big); code(err) != "552" {
		t.Errorf("oversized: %v, want 552", err)
	}
	if st := m.srv.Stats(); st.TooLarge != 1 {
		t.Errorf("TooLarge %d, want 1", st.TooLarge)
	}
	if err := send(m.addr, "carol@sender.example", []string{"alice@example.org"}, inMsg); err != nil {
		t.Errorf("second message: %v", err)
	}
	if err := send(m.addr, "carol@sender.example", []string{"alice@example.org"}, inMsg); code(err) != "450" {
		t.Errorf("third message: %v, want 450 (rate)", err)
	}

	// Connections: a burst of 2 per address, then 421.
	m2, _, _ := startMX(t, func(c *gateway.Config) { c.ConnectionRate = gateway.Rate{PerMinute: 1e-9, Burst: 2} })
	for i := range 3 {
		c, err := smtp.Dial(m2.addr)
		if i < 2 {
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			c.Quit()
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), "421") {
			t.Errorf("connection %d: %v, want 421", i, err)
		}
	}
	if st := m2.srv.Stats(); st.RateLimited != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestStamp(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"Subject: x\r\n\r\nbody\r\n", "A: 1\r\nSubject: x\r\n\r\nbody\r\n"},
		{"Subject: x\n\nbody\n", "A: 1\nSubject: x\n\nbody\n"},
		{"X-Epost-Junk: no\n  folded\nSubject: x\n\nX-Epost-Junk: in the body\n", "A: 1\nSubject: x\n\nX-Epost-Junk: in the body\n"},
		{"no header at all", "A: 1\r\nno header at all"},
	} {
		if got := string(gateway.Stamp([]byte(c.in), "mx.example.org", [][2]string{{"A", "1"}})); got != c.want {
			t.Errorf("stamp(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestServerInject(t *testing.T) {
	m, _, _ := startMX(t, nil)
	bounce := []byte("From: MAILER-DAEMON@mx.example.org\r\nSubject: Undelivered\r\n\r\nSorry.\r\n")
	if err := m.srv.Inject([]string{"alice@example.org"}, bounce); err != nil {
		t.Fatal(err)
	}
	inj := m.injected()
	if len(inj) != 1 || inj[0].gw != "gateway@example.org" || !bytes.Equal(inj[0].msg, bounce) {
		t.Errorf("injected %+v", inj)
	}
}

// TestCloseBeforeServe: a Close that overtakes "go Serve" still stops it.
func TestCloseBeforeServe(t *testing.T) {
	srv := gateway.New(gateway.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(ln); err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("the listener is still open")
	}
}

// TestSilentSenderTimesOut: an MTA that connects and says nothing is
// answered 421 and disconnected after ReadTimeout; the test waits for the
// server to hang up (EOF), not for a time.
func TestSilentSenderTimesOut(t *testing.T) {
	m, _, _ := startMX(t, func(c *gateway.Config) { c.ReadTimeout = 200 * time.Millisecond })
	conn, err := net.Dial("tcp", m.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute)) // a guard against a hang
	all, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading to EOF: %v", err)
	}
	if !strings.Contains(string(all), "421 4.4.2") {
		t.Fatalf("server said %q before hanging up", all)
	}
	if st := m.srv.Stats(); st.TimedOut != 1 {
		t.Fatalf("TimedOut %d, want 1", st.TimedOut)
	}
}
