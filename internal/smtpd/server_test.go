package smtpd

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/epost-mail/epost/internal/post"
	"github.com/epost-mail/epost/internal/store"
)

// fakeLoop is an event loop reduced to a mutex: Do runs f while holding
// it, as does anything the fake mailer calls back later.
type fakeLoop struct {
	mu      sync.Mutex
	stopped bool
}

var errLoopStopped = errors.New("fake loop: stopped")

func (l *fakeLoop) Do(f func()) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return errLoopStopped
	}
	f()
	return nil
}

type sent struct {
	from  string
	rcpts []string
	msg   []byte
}

// fakeMailer stands in for POST. Send's done is held until release (or
// answered at once when auto is set).
type fakeMailer struct {
	loop    *fakeLoop
	members map[string]bool  // read and written on the loop
	lookErr error            // read and written on the loop
	absent  bool             // read and written on the loop: no POST
	quota   map[string]int64 // read and written on the loop: a message this large is over quota

	mu      sync.Mutex // guards what the test reads from its own goroutine
	auto    bool
	sendErr error
	sends   []sent
	pending []func(error)
}

func (m *fakeMailer) LookupUser(addr string, done func(bool, error)) {
	if m.lookErr != nil {
		done(false, m.lookErr)
		return
	}
	done(m.members[addr], nil)
}

func (m *fakeMailer) CheckQuota(addr string, size int64) error {
	if m.quota[addr] > 0 && size >= m.quota[addr] {
		return post.ErrOverQuota
	}
	return nil
}

func (m *fakeMailer) Send(from string, rcpts []string, msg []byte, done func(error)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sends = append(m.sends, sent{from, append([]string(nil), rcpts...), msg})
	if m.auto {
		done(m.sendErr)
		return
	}
	m.pending = append(m.pending, done)
}

func (m *fakeMailer) set(auto bool, sendErr error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.auto, m.sendErr = auto, sendErr
}

func (m *fakeMailer) sent() []sent {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]sent(nil), m.sends...)
}

func (m *fakeMailer) sendCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sends)
}

// release answers every held Send, on the loop.
func (m *fakeMailer) release(err error) {
	m.mu.Lock()
	p := m.pending
	m.pending = nil
	m.mu.Unlock()
	m.loop.Do(func() {
		for _, done := range p {
			done(err)
		}
	})
}

type fakeAuth map[string]string // username = address -> password

func (a fakeAuth) Check(username, password string) (string, bool) {
	p, ok := a[username]
	return username, ok && p == password
}

type fakeOutbound struct {
	mu    sync.Mutex
	err   error
	sends []sent
}

func (o *fakeOutbound) sent() []sent {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]sent(nil), o.sends...)
}

func (o *fakeOutbound) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.err = err
}

func (o *fakeOutbound) Relay(from string, to []string, msg []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sends = append(o.sends, sent{from, to, msg})
	return o.err
}

// testClock is the limiter's injectable clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type rig struct {
	t      *testing.T
	srv    *Server
	loop   *fakeLoop
	mail   *fakeMailer
	clock  *testClock
	addr   string
	served chan error
}

const (
	alice = "alice@example.org"
	bob   = "bob@example.org"
)

func newRig(t *testing.T, edit func(*Config)) *rig {
	return newRigOn(t, edit, nil)
}

// newRigOn serves on loopback; wrap, when set, changes the accepted
// connections (to pretend they come from elsewhere).
func newRigOn(t *testing.T, edit func(*Config), wrap func(net.Listener) net.Listener) *rig {
	t.Helper()
	loop := &fakeLoop{}
	mail := &fakeMailer{loop: loop, members: map[string]bool{alice: true, bob: true}, auto: true}
	clock := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := Config{
		Loop:    loop,
		Auth:    fakeAuth{alice: "alice-pw", bob: "bob-pw"},
		Domains: []string{"example.org"},
		Now:     clock.Now,
	}
	if edit != nil {
		edit(&cfg)
	}
	srv := newServer(cfg, func() mailer {
		if mail.absent {
			return nil
		}
		return mail
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, srv: srv, loop: loop, mail: mail, clock: clock, addr: ln.Addr().String(), served: make(chan error, 1)}
	if wrap != nil {
		ln = wrap(ln)
	}
	go func() { r.served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-r.served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return r
}

func (r *rig) dial() *smtp.Client {
	r.t.Helper()
	c, err := smtp.Dial(r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

func (r *rig) login(user, pw string) *smtp.Client {
	r.t.Helper()
	c := r.dial()
	if err := c.Auth(sasl.NewPlainClient("", user, pw)); err != nil {
		r.t.Fatalf("AUTH PLAIN %s: %v", user, err)
	}
	return c
}

func wantCode(t *testing.T, what string, err error, code int) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("%s: got %v, want SMTP reply %d", what, err, code)
	}
	if se.Code != code {
		t.Fatalf("%s: got %d %v, want %d", what, se.Code, se.Message, code)
	}
}

func message(from, to, subject string) []byte {
	return []byte("From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\n\r\nHello, " + to + ".\r\n")
}

// data sends msg and returns the reply to the final dot.
func data(c *smtp.Client, msg []byte) error {
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return w.Close()
}

func TestExtensions(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxMessageBytes = 12345 })
	c := r.dial()
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "AUTH"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("%s not advertised", ext)
		}
	}
	if n, ok := c.MaxMessageSize(); !ok || n != 12345 {
		t.Errorf("SIZE = %d, %v; want 12345", n, ok)
	}
	if !c.SupportsAuth("PLAIN") || !c.SupportsAuth("LOGIN") {
		t.Errorf("AUTH PLAIN and LOGIN not both advertised on loopback")
	}
}

// TestNoReplyBeforeDurable: the 250 waits for POST's done(nil).
func TestNoReplyBeforeDurable(t *testing.T) {
	r := newRig(t, nil)
	r.mail.set(false, nil)
	c := r.login(alice, "alice-pw")
	if err := c.Mail(alice, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(bob, nil); err != nil {
		t.Fatal(err)
	}
	msg := message(alice, bob, "durable")
	replied := make(chan error, 1)
	go func() { replied <- data(c, msg) }()
	waitFor(t, "Send called", func() bool { return r.mail.sendCount() == 1 })
	select {
	case err := <-replied:
		t.Fatalf("replied %v before POST reported the message durable", err)
	default:
	}
	if st := r.srv.Stats(); st.Accepted != 0 {
		t.Fatalf("accepted before durable: %+v", st)
	}
	r.mail.release(nil)
	if err := <-replied; err != nil {
		t.Fatalf("DATA after durable: %v", err)
	}
	s := r.mail.sent()[0]
	if s.from != alice || len(s.rcpts) != 1 || s.rcpts[0] != bob || string(s.msg) != string(msg) {
		t.Fatalf("POST got %q -> %q: %q", s.from, s.rcpts, s.msg)
	}
	if st := r.srv.Stats(); st.Accepted != 1 || st.AuthOK != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSendFailuresAreTemporary(t *testing.T) {
	t.Run("post error", func(t *testing.T) {
		r := newRig(t, nil)
		r.mail.set(true, errors.New("past: insert: too few replicas"))
		c := r.login(alice, "alice-pw")
		err := c.SendMail(alice, []string{bob}, strings.NewReader(string(message(alice, bob, "x"))))
		wantCode(t, "DATA with POST failing", err, 451)
		if st := r.srv.Stats(); st.TempFailed != 1 || st.Accepted != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		r := newRig(t, func(c *Config) { c.SendTimeout = 50 * time.Millisecond })
		r.mail.set(false, nil)
		c := r.login(alice, "alice-pw")
		err := c.SendMail(alice, []string{bob}, strings.NewReader(string(message(alice, bob, "x"))))
		wantCode(t, "DATA with POST silent", err, 451)
		r.mail.release(nil) // a late answer goes nowhere
	})
	t.Run("loop stopped", func(t *testing.T) {
		r := newRig(t, nil)
		c := r.login(alice, "alice-pw")
		if err := c.Mail(alice, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt(bob, nil); err != nil {
			t.Fatal(err)
		}
		r.loop.mu.Lock()
		r.loop.stopped = true
		r.loop.mu.Unlock()
		wantCode(t, "DATA with the loop stopped", data(c, message(alice, bob, "x")), 451)
	})
	t.Run("no mail system", func(t *testing.T) {
		r := newRig(t, nil)
		r.loop.Do(func() { r.mail.absent = true })
		c := r.login(alice, "alice-pw")
		if err := c.Mail(alice, nil); err != nil {
			t.Fatal(err)
		}
		wantCode(t, "RCPT without POST", c.Rcpt(bob, nil), 451)
	})
}

func TestNeverAnOpenRelay(t *testing.T) {
	r := newRig(t, nil)
	c := r.dial()
	wantCode(t, "MAIL without AUTH", c.Mail(alice, nil), 530)
	wantCode(t, "RCPT without AUTH", c.Rcpt("victim@elsewhere.example", nil), 502)

	c = r.login(alice, "alice-pw")
	wantCode(t, "MAIL FROM someone else", c.Mail(bob, nil), 553)
	wantCode(t, "MAIL FROM <>", c.Mail("", nil), 553)
	if err := c.Mail("Alice@Example.ORG", nil); err != nil {
		t.Fatalf("MAIL FROM own address in other case: %v", err)
	}
	wantCode(t, "RCPT outside without Outbound", c.Rcpt("victim@elsewhere.example", nil), 550)
	wantCode(t, "RCPT unknown member", c.Rcpt("carol@example.org", nil), 550)
	if err := c.Mail(alice, &smtp.MailOptions{UTF8: true}); err != nil {
		t.Fatalf("MAIL SMTPUTF8: %v", err)
	}
	wantCode(t, "RCPT non-ASCII member address", c.Rcpt("josé@example.org", nil), 550)
	if err := c.Rcpt(bob, nil); err != nil {
		t.Fatal(err)
	}
	if err := data(c, message(alice, bob, "ok")); err != nil {
		t.Fatal(err)
	}
	if got := r.mail.sendCount(); got != 1 {
		t.Fatalf("%d sends, want 1", got)
	}
	if st := r.srv.Stats(); st.Refused != 6 {
		t.Fatalf("refused %d, want 6 (%+v)", st.Refused, st)
	}
}

func TestOutbound(t *testing.T) {
	out := &fakeOutbound{}
	r := newRig(t, func(c *Config) { c.Outbound = out })
	c := r.login(alice, "alice-pw")
	msg := message(alice, "dave@elsewhere.example", "out")
	if err := c.SendMail(alice, []string{bob, "dave@elsewhere.example"}, strings.NewReader(string(msg))); err != nil {
		t.Fatal(err)
	}
	if o := out.sent(); len(o) != 1 || len(o[0].rcpts) != 1 || o[0].rcpts[0] != "dave@elsewhere.example" || string(o[0].msg) != string(msg) {
		t.Fatalf("outbound got %+v", o)
	}
	if p := r.mail.sent(); len(p) != 1 || len(p[0].rcpts) != 1 || p[0].rcpts[0] != bob {
		t.Fatalf("POST got %+v", p)
	}
	out.fail(errors.New("smarthost down"))
	err := c.SendMail(alice, []string{"dave@elsewhere.example"}, strings.NewReader(string(msg)))
	wantCode(t, "DATA with the gateway down", err, 451)
}

// wantReply checks a reply's code and enhanced code.
func wantReply(t *testing.T, what string, err error, code int, enh smtp.EnhancedCode) {
	t.Helper()
	wantCode(t, what, err, code)
	var se *smtp.SMTPError
	errors.As(err, &se)
	if se.EnhancedCode != enh {
		t.Fatalf("%s: got %d %v %s, want %v", what, se.Code, se.EnhancedCode, se.Message, enh)
	}
}

// TestStorageFaultsAreTemporary: a message POST could not store because
// this node's disk is full gets 452 4.3.1, one lost to a disk error 451
// 4.3.0, so the client keeps it and retries; the errors are matched
// through POST's and PAST's wrapping.
func TestStorageFaultsAreTemporary(t *testing.T) {
	for _, c := range []struct {
		cause error
		code  int
		enh   smtp.EnhancedCode
	}{
		{store.ErrFull, 452, smtp.EnhancedCode{4, 3, 1}},
		{store.ErrIO, 451, smtp.EnhancedCode{4, 3, 0}},
	} {
		r := newRig(t, nil)
		r.mail.set(true, fmt.Errorf("post: notify bob: past: refused: 1a2b (here: store: put: %w)", c.cause))
		c2 := r.login(alice, "alice-pw")
		err := c2.SendMail(alice, []string{bob}, strings.NewReader(string(message(alice, bob, "x"))))
		wantReply(t, fmt.Sprintf("DATA with %v", c.cause), err, c.code, c.enh)
		if st := r.srv.Stats(); st.TempFailed != 1 || st.Accepted != 0 {
			t.Fatalf("stats %+v", st)
		}
	}
}

// TestRecipientOverQuota: a recipient whose mailbox is full gets 452
// 4.2.2 at RCPT (taking the declared SIZE into account); the others in
// the transaction are unaffected.
func TestRecipientOverQuota(t *testing.T) {
	r := newRig(t, nil)
	r.loop.Do(func() { r.mail.quota = map[string]int64{bob: 1000} })
	c := r.login(alice, "alice-pw")
	if err := c.Mail(alice, &smtp.MailOptions{Size: 2000}); err != nil {
		t.Fatal(err)
	}
	wantReply(t, "RCPT to a full mailbox", c.Rcpt(bob, nil), 452, smtp.EnhancedCode{4, 2, 2})
	if err := c.Rcpt(alice, nil); err != nil {
		t.Fatalf("RCPT to a mailbox with room: %v", err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(alice, &smtp.MailOptions{Size: 10}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(bob, nil); err != nil {
		t.Fatalf("RCPT of a small message: %v", err)
	}
	if st := r.srv.Stats(); st.OverQuota != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLookupFailureIsTemporary(t *testing.T) {
	r := newRig(t, nil)
	r.loop.Do(func() { r.mail.lookErr = errors.New("past: lookup timed out") })
	c := r.login(alice, "alice-pw")
	if err := c.Mail(alice, nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "RCPT while lookups fail", c.Rcpt(bob, nil), 451)
}

func TestDomainsDefaultToTheUsers(t *testing.T) {
	r := newRig(t, func(c *Config) { c.Domains = nil })
	c := r.login(alice, "alice-pw")
	if err := c.Mail(alice, nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "RCPT unknown member", c.Rcpt("carol@example.org", nil), 550)
	wantCode(t, "RCPT outside", c.Rcpt("carol@elsewhere.example", nil), 550)
	if err := c.Rcpt(bob, nil); err != nil {
		t.Fatal(err)
	}
}

func TestLimits(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxMessageBytes = 1000; c.MaxRecipients = 2 })
	r.loop.Do(func() { r.mail.members["carol@example.org"] = true })
	c := r.login(alice, "alice-pw")
	big := message(alice, bob, strings.Repeat("xxxxxxxxx\r\n", 200))
	if err := c.Mail(alice, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(bob, nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "oversized DATA", data(c, big), 552)
	// Declared size (RFC 1870) too large: refused at MAIL.
	wantCode(t, "MAIL SIZE=2000", c.Mail(alice, &smtp.MailOptions{Size: 2000}), 552)

	if err := c.Mail(alice, nil); err != nil {
		t.Fatal(err)
	}
	for _, rc := range []string{bob, alice} {
		if err := c.Rcpt(rc, nil); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, "third RCPT", c.Rcpt("carol@example.org", nil), 452)
	if r.mail.sendCount() != 0 {
		t.Fatal("an oversized message reached POST")
	}
}

func TestAuthLogin(t *testing.T) {
	r := newRig(t, nil)
	c := r.dial()
	if err := c.Auth(sasl.NewLoginClient(bob, "bob-pw")); err != nil {
		t.Fatalf("AUTH LOGIN: %v", err)
	}
	if err := c.Mail(bob, nil); err != nil {
		t.Fatal(err)
	}
	c = r.dial()
	wantCode(t, "AUTH LOGIN wrong password", c.Auth(sasl.NewLoginClient(bob, "nope")), 535)
	c = r.dial()
	wantCode(t, "AUTH PLAIN as someone else", c.Auth(sasl.NewPlainClient(alice, bob, "bob-pw")), 535)
}

// TestAuthBruteForce: Free failures, then exponentially longer lockouts
// on the limiter's clock; the right password is refused while locked.
func TestAuthBruteForce(t *testing.T) {
	r := newRig(t, func(c *Config) {
		c.AuthLimit = AuthLimit{Free: 3, Base: time.Minute, Max: 10 * time.Minute, Forget: time.Hour}
	})
	c := r.dial()
	for i := range 3 {
		wantCode(t, fmt.Sprintf("wrong password %d", i+1), c.Auth(sasl.NewPlainClient("", alice, "guess")), 535)
	}
	wantCode(t, "locked out", c.Auth(sasl.NewPlainClient("", alice, "alice-pw")), 454)
	c = r.dial() // a new connection does not help
	wantCode(t, "locked out, new connection", c.Auth(sasl.NewPlainClient("", alice, "alice-pw")), 454)
	r.clock.Advance(time.Minute + time.Second)
	wantCode(t, "fourth wrong password", c.Auth(sasl.NewPlainClient("", alice, "guess")), 535)
	r.clock.Advance(time.Minute + time.Second) // the lockout doubled to 2 min
	wantCode(t, "still locked", c.Auth(sasl.NewPlainClient("", alice, "alice-pw")), 454)
	r.clock.Advance(time.Minute)
	if err := c.Auth(sasl.NewPlainClient("", alice, "alice-pw")); err != nil {
		t.Fatalf("after the lockout: %v", err)
	}
	if st := r.srv.Stats(); st.AuthFailed != 4 || st.AuthLocked != 3 || st.AuthOK != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// remoteListener makes accepted connections look as if they came from
// 192.0.2.7, to test what is refused off loopback.
type remoteListener struct{ net.Listener }

type remoteConn struct{ net.Conn }

func (remoteConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 40000}
}

func (l remoteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return remoteConn{c}, nil
}

func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

func TestAuthNeedsTLSOffLoopback(t *testing.T) {
	r := newRigOn(t, func(c *Config) { c.TLS = selfSigned(t) },
		func(ln net.Listener) net.Listener { return remoteListener{ln} })
	c := r.dial()
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH advertised in the clear off loopback")
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not advertised")
	}
	wantCode(t, "AUTH in the clear", c.Auth(sasl.NewPlainClient("", alice, "alice-pw")), 538)
	wantCode(t, "MAIL in the clear", c.Mail(alice, nil), 530)

	tc, err := smtp.DialStartTLS(r.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if err := tc.Auth(sasl.NewPlainClient("", alice, "alice-pw")); err != nil {
		t.Fatalf("AUTH after STARTTLS: %v", err)
	}
	if err := tc.SendMail(alice, []string{bob}, strings.NewReader(string(message(alice, bob, "tls")))); err != nil {
		t.Fatal(err)
	}
}

// TestPipelining sends a whole transaction in one write (RFC 2920) and
// reads the replies in order.
func TestPipelining(t *testing.T) {
	r := newRig(t, nil)
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	reply := func() string {
		t.Helper()
		var last string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			last = line
			if len(line) < 4 || line[3] != '-' {
				return strings.TrimRight(last, "\r\n")
			}
		}
	}
	reply() // the greeting
	// AUTH PLAIN's initial response: "\0alice@example.org\0alice-pw".
	plain := "AGFsaWNlQGV4YW1wbGUub3JnAGFsaWNlLXB3"
	fmt.Fprintf(conn, "EHLO client.example\r\nAUTH PLAIN %s\r\nMAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nRCPT TO:<nobody@example.org>\r\nDATA\r\n", plain, alice, bob)
	for _, want := range []string{"250", "235", "250", "250", "550", "354"} {
		if got := reply(); !strings.HasPrefix(got, want) {
			t.Fatalf("got %q, want %s", got, want)
		}
	}
	fmt.Fprintf(conn, "Subject: pipelined\r\n\r\n..dot-stuffed\r\n.\r\nQUIT\r\n")
	if got := reply(); !strings.HasPrefix(got, "250") {
		t.Fatalf("after DATA: %q", got)
	}
	if got := reply(); !strings.HasPrefix(got, "221") {
		t.Fatalf("after QUIT: %q", got)
	}
	if got := string(r.mail.sent()[0].msg); got != "Subject: pipelined\r\n\r\n.dot-stuffed\r\n" {
		t.Fatalf("stored %q", got)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCloseWhileWaiting: a session waiting for POST gives up when the
// server closes, without a 250; Serve returns nil.
func TestCloseWhileWaiting(t *testing.T) {
	r := newRig(t, nil)
	r.mail.set(false, nil)
	c := r.login(alice, "alice-pw")
	if err := c.Mail(alice, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(bob, nil); err != nil {
		t.Fatal(err)
	}
	replied := make(chan error, 1)
	go func() { replied <- data(c, message(alice, bob, "x")) }()
	waitFor(t, "Send called", func() bool { return r.mail.sendCount() == 1 })
	if err := r.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-replied; err == nil {
		t.Fatal("250 for a message POST never stored")
	}
	if st := r.srv.Stats(); st.Accepted != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestIdleTimeout: a silent client is dropped with 421 (RFC 5321 section
// 4.5.3.2).
func TestIdleTimeout(t *testing.T) {
	r := newRig(t, func(c *Config) { c.ReadTimeout = 100 * time.Millisecond })
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "220") {
		t.Fatalf("greeting %q %v", l, err)
	}
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "421") {
		t.Fatalf("after idling: %q %v", l, err)
	}
}

func TestSendLimit(t *testing.T) {
	r := newRig(t, func(c *Config) { c.SendLimit = SendLimit{PerMinute: 1, Burst: 2} })
	c := r.login(alice, "alice-pw")
	send := func(rcpts ...string) error {
		return c.SendMail(alice, rcpts, strings.NewReader(string(message(alice, bob, "limited"))))
	}
	if err := send(bob, alice); err != nil {
		t.Fatalf("within the burst: %v", err)
	}
	wantCode(t, "over the limit", send(bob), 451)
	r.clock.Advance(time.Minute)
	if err := send(bob); err != nil {
		t.Fatalf("after a minute: %v", err)
	}
	// A message that fails to store gives its tokens back.
	r.clock.Advance(time.Minute)
	r.mail.set(true, errors.New("past: no replicas"))
	wantCode(t, "POST failing", send(bob), 451)
	r.mail.set(true, nil)
	if err := send(bob); err != nil {
		t.Fatalf("after a refunded failure: %v", err)
	}
	// 5 notifications: the first message's alice is a blind copy.
	if st := r.srv.Stats(); st.RateLimited != 1 || st.Accepted != 3 || r.mail.sendCount() != 5 {
		t.Fatalf("stats %+v, %d sends", st, r.mail.sendCount())
	}
}

// TestBlindCopies: a Bcc recipient gets a notification of their own, so
// the others never see their address; a retry makes the same groups.
func TestBlindCopies(t *testing.T) {
	r := newRig(t, nil)
	r.loop.Do(func() { r.mail.members["carol@example.org"] = true })
	c := r.login(alice, "alice-pw")
	msg := message(alice, bob, "bcc")
	for range 2 {
		if err := c.SendMail(alice, []string{"carol@example.org", bob}, strings.NewReader(string(msg))); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, s := range r.mail.sent() {
		got = append(got, strings.Join(s.rcpts, ","))
	}
	if want := "bob@example.org carol@example.org bob@example.org carol@example.org"; strings.Join(got, " ") != want {
		t.Fatalf("notifications to %q, want %q", got, want)
	}
}

// TestSendLimitNoRefundAfterDelivery: a gateway refusal after POST stored
// the message keeps the tokens spent, or a refused outside address would
// make sending to the community free.
func TestSendLimitNoRefundAfterDelivery(t *testing.T) {
	out := &fakeOutbound{err: errors.New("gateway down")}
	r := newRig(t, func(c *Config) { c.Outbound = out; c.SendLimit = SendLimit{PerMinute: 1, Burst: 2} })
	c := r.login(alice, "alice-pw")
	msg := strings.NewReader(string(message(alice, bob, "x")))
	wantCode(t, "gateway down", c.SendMail(alice, []string{bob, "dave@elsewhere.example"}, msg), 451)
	wantCode(t, "tokens spent", c.SendMail(alice, []string{bob}, strings.NewReader(string(message(alice, bob, "y")))), 451)
	if st := r.srv.Stats(); st.RateLimited != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestConnectionLimit(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxConnectionsPerIP = 2 })
	greet := func() (net.Conn, string) {
		conn, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		l, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return conn, l
	}
	first, l1 := greet()
	_, l2 := greet()
	_, l3 := greet()
	if !strings.HasPrefix(l1, "220") || !strings.HasPrefix(l2, "220") || !strings.HasPrefix(l3, "421") {
		t.Fatalf("greetings %q %q %q", l1, l2, l3)
	}
	// A slot frees when a connection ends (the server notices the close).
	first.Close()
	waitFor(t, "a free slot", func() bool {
		_, l := greet()
		return strings.HasPrefix(l, "220")
	})
}

// rawSMTP is a client speaking SMTP line by line, to send what a library
// client would not (raw bytes) and to see replies as sent.
type rawSMTP struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func dialRawSMTP(t *testing.T, addr string) *rawSMTP {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(time.Minute)) // against a hang, not a timing
	r := &rawSMTP{t: t, conn: conn, br: bufio.NewReader(conn)}
	r.reply()
	return r
}

// reply returns a whole (possibly multi-line) reply.
func (r *rawSMTP) reply() string {
	r.t.Helper()
	var all string
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			r.t.Fatalf("read: %v (after %q)", err, all+line)
		}
		all += line
		if len(line) < 4 || line[3] != '-' {
			return all
		}
	}
}

// cmd sends line and checks that the reply starts with want.
func (r *rawSMTP) cmd(line, want string) string {
	r.t.Helper()
	fmt.Fprintf(r.conn, "%s\r\n", line)
	got := r.reply()
	if !strings.HasPrefix(got, want) {
		r.t.Fatalf("%q: got %q, want %s", line, got, want)
	}
	return got
}

// TestInternationalAddresses, with a raw client: SMTPUTF8 is honoured. An
// outside recipient with a non-ASCII local part or domain is taken (its
// domain in ASCII form) and relayed with SMTPUTF8; a member is reached
// through the Unicode form of a community domain; a non-ASCII local part
// in a community domain is no member (550); a user may give her own
// address as sender with its domain in Unicode. Without SMTPUTF8 such an
// address gets 553 5.6.7. Replies echo the client's address with
// anything but printable ASCII escaped, never its raw bytes.
func TestInternationalAddresses(t *testing.T) {
	h := startRelayHost(t, nil)
	out := &Smarthost{Addr: h.addr, Username: "relay", Password: "secret"}
	const carol = "carol@xn--bcher-kva.example"
	r := newRig(t, func(c *Config) {
		c.Outbound = out
		c.Domains = []string{"example.org", "xn--bcher-kva.example"}
		c.Auth = fakeAuth{alice: "alice-pw", carol: "carol-pw"}
	})
	r.mail.loop.Do(func() { r.mail.members[carol] = true })
	c := dialRawSMTP(t, r.addr)
	if ehlo := c.cmd("EHLO client.example", "250"); !strings.Contains(ehlo, "SMTPUTF8") {
		t.Fatalf("EHLO: %q", ehlo)
	}
	c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAGFsaWNlLXB3", "235")

	c.cmd("MAIL FROM:<"+alice+">", "250")
	c.cmd("RCPT TO:<josé@elsewhere.example>", "553 5.6.7")
	got := c.cmd("RCPT TO:<bad\xff\xfe@elsewhere.example>", "553")
	for i := 0; i < len(got); i++ {
		if got[i] >= 0x7f || got[i] < 0x20 && got[i] != '\r' && got[i] != '\n' {
			t.Fatalf("reply with raw bytes: %q", got)
		}
	}
	if !strings.Contains(got, `\xff\xfe`) {
		t.Fatalf("reply does not show the bad bytes escaped: %q", got)
	}
	c.cmd("RSET", "250")

	c.cmd("MAIL FROM:<bob@example.org> SMTPUTF8", "553")
	c.cmd("MAIL FROM:<alice@exämple.org> SMTPUTF8", "553")
	c.cmd("MAIL FROM:<"+alice+"> SMTPUTF8", "250")
	c.cmd("RCPT TO:<josé@münchen.example>", "250")
	c.cmd("RCPT TO:<Carol@Bücher.example>", "250")
	c.cmd("RCPT TO:<josé@example.org>", "550 5.1.1")
	c.cmd("RCPT TO:<jo sé@elsewhere.example>", "5")
	c.cmd("RCPT TO:<josé@bad..domain>", "553 5.1.3")
	c.cmd("DATA", "354")
	msg := "From: " + alice + "\r\nTo: josé@münchen.example, carol@bücher.example\r\nSubject: grüße\r\n\r\nhello\r\n"
	fmt.Fprintf(c.conn, "%s.\r\n", msg)
	if got := c.reply(); !strings.HasPrefix(got, "250") {
		t.Fatalf("DATA: %q", got)
	}
	if p := r.mail.sent(); len(p) != 1 || len(p[0].rcpts) != 1 || p[0].rcpts[0] != carol {
		t.Fatalf("POST got %+v", p)
	}
	if o := h.sent(); len(o) != 1 || len(o[0].rcpts) != 1 || o[0].rcpts[0] != "josé@xn--mnchen-3ya.example" || string(o[0].msg) != msg {
		t.Fatalf("smarthost got %+v", o)
	}
	// carol may name herself with her domain in Unicode, with SMTPUTF8.
	cc := dialRawSMTP(t, r.addr)
	cc.cmd("EHLO client.example", "250")
	cc.cmd("AUTH PLAIN AGNhcm9sQHhuLS1iY2hlci1rdmEuZXhhbXBsZQBjYXJvbC1wdw==", "235") // carol, carol-pw
	cc.cmd("MAIL FROM:<carol@bücher.example>", "553")
	cc.cmd("MAIL FROM:<carol@bücher.example> SMTPUTF8", "250")
	// A smarthost without SMTPUTF8 cannot take it: a plain error, which
	// the client gets as a 451 and may retry.
	old := startRelayHostUTF8(t, nil, false)
	err := (&Smarthost{Addr: old.addr, Username: "relay", Password: "secret"}).Relay(alice, []string{"josé@xn--mnchen-3ya.example"}, []byte(msg))
	var se *smtp.SMTPError
	if err == nil || errors.As(err, &se) || len(old.sent()) != 0 {
		t.Fatalf("relaying to a smarthost without SMTPUTF8: %v, want a plain error", err)
	}
}

func TestReplyText(t *testing.T) {
	for in, want := range map[string]string{
		"Bad <a@b>":      "Bad <a@b>",
		"Bad <\xff\r\n>": `Bad <\xff\x0d\x0a>`,
		"josé":           `jos\xc3\xa9`,
	} {
		if got := replyText(in); got != want {
			t.Errorf("replyText(%q) = %q, want %q", in, got, want)
		}
	}
	if got := replyText(strings.Repeat("x", 1000)); len(got) != maxReplyText+3 {
		t.Errorf("a long text is %d bytes", len(got))
	}
}
