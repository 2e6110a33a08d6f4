package smtpd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// relayHost is a fake smarthost: it requires AUTH PLAIN as relay/secret,
// refuses recipients at refused.example, and records what it accepts.
type relayHost struct {
	mu   sync.Mutex
	got  []sent
	addr string
}

type relaySession struct {
	h      *relayHost
	authed bool
	cur    sent
}

func (s *relaySession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *relaySession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, u, p string) error {
		if u != "relay" || p != "secret" {
			return smtp.ErrAuthFailed
		}
		s.authed = true
		return nil
	}), nil
}
func (s *relaySession) Mail(from string, _ *smtp.MailOptions) error {
	if !s.authed {
		return smtp.ErrAuthRequired
	}
	s.cur = sent{from: from}
	return nil
}
func (s *relaySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasSuffix(to, "@refused.example") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"}
	}
	s.cur.rcpts = append(s.cur.rcpts, to)
	return nil
}
func (s *relaySession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.msg = b
	s.h.mu.Lock()
	s.h.got = append(s.h.got, s.cur)
	s.h.mu.Unlock()
	return nil
}
func (s *relaySession) Reset()        {}
func (s *relaySession) Logout() error { return nil }

func (h *relayHost) sent() []sent {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]sent(nil), h.got...)
}

func startRelayHost(t *testing.T, tc *tls.Config) *relayHost {
	return startRelayHostUTF8(t, tc, true)
}

// startRelayHostUTF8 starts a relayHost, offering SMTPUTF8 if utf8.
func startRelayHostUTF8(t *testing.T, tc *tls.Config, utf8 bool) *relayHost {
	h := &relayHost{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &relaySession{h: h}, nil }))
	srv.AllowInsecureAuth = true
	srv.EnableSMTPUTF8 = utf8
	srv.TLSConfig = tc
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return h
}

func TestSmarthostRelays(t *testing.T) {
	h := startRelayHost(t, nil)
	sh := &Smarthost{Addr: h.addr, Username: "relay", Password: "secret"}
	out := &Smarthost{Addr: h.addr, Username: "relay", Password: "secret"}
	// Through the submission server: community recipients by POST, the
	// rest through the smarthost.
	r := newRig(t, func(c *Config) { c.Outbound = out })
	c := r.login(alice, "alice-pw")
	msg := message(alice, "dave@elsewhere.example", "out")
	if err := c.SendMail(alice, []string{bob, "dave@elsewhere.example"}, strings.NewReader(string(msg))); err != nil {
		t.Fatal(err)
	}
	got := h.sent()
	if len(got) != 1 || got[0].from != alice || len(got[0].rcpts) != 1 || got[0].rcpts[0] != "dave@elsewhere.example" ||
		string(got[0].msg) != string(msg) {
		t.Fatalf("smarthost got %+v", got)
	}
	// The smarthost's refusal of a recipient reaches the client as is.
	err := c.SendMail(alice, []string{"eve@refused.example"}, strings.NewReader(string(msg)))
	wantCode(t, "recipient refused by the smarthost", err, 550)

	// The smarthost refusing our login is our problem: a plain error (451).
	sh.Password = "wrong"
	err = sh.Relay(alice, []string{"dave@elsewhere.example"}, msg)
	var se *smtp.SMTPError
	if err == nil || errors.As(err, &se) {
		t.Fatalf("wrong smarthost password: %v, want a plain error", err)
	}
}

func TestSmarthostRequiresTLSWhenConfigured(t *testing.T) {
	// No STARTTLS at the smarthost, TLS configured here: nothing is sent.
	h := startRelayHost(t, nil)
	sh := &Smarthost{Addr: h.addr, Username: "relay", Password: "secret", TLS: &tls.Config{ServerName: "localhost"}}
	if err := sh.Relay(alice, []string{"dave@elsewhere.example"}, message(alice, "dave", "x")); err == nil {
		t.Fatal("relayed without TLS")
	}
	if len(h.sent()) != 0 {
		t.Fatal("the smarthost got mail in the clear")
	}
	// With STARTTLS and a certificate the client trusts: relayed.
	tc := selfSigned(t)
	h = startRelayHost(t, tc)
	cert, err := x509.ParseCertificate(tc.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	sh = &Smarthost{Addr: h.addr, Username: "relay", Password: "secret", TLS: &tls.Config{ServerName: "localhost", RootCAs: roots}}
	if err := sh.Relay(alice, []string{"dave@elsewhere.example"}, message(alice, "dave", "x")); err != nil {
		t.Fatalf("relay over STARTTLS: %v", err)
	}
	if len(h.sent()) != 1 {
		t.Fatal("not relayed")
	}
	// An unreachable smarthost: a plain error.
	sh = &Smarthost{Addr: "127.0.0.1:1"}
	if err := sh.Relay(alice, []string{"dave@elsewhere.example"}, nil); err == nil {
		t.Fatal("relayed to a closed port")
	}
}
