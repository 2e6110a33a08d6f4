package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/gateway"
)

// remoteMX is an Internet mail exchanger for the tests: it refuses
// recipients named in refuse (550), answers DATA with tempFail (451)
// while that is above 0, and sends each accepted message on got.
type remoteMX struct {
	mu       sync.Mutex
	refuse   map[string]bool
	tempFail int
	utf8     bool // the last MAIL asked for SMTPUTF8
	got      chan delivered
	addr     string
}

type delivered struct {
	from string
	to   []string
	msg  []byte
}

func startRemoteMX(t *testing.T) *remoteMX {
	r := &remoteMX{refuse: map[string]bool{}, got: make(chan delivered, 16)}
	srv := gosmtp.NewServer(gosmtp.BackendFunc(func(*gosmtp.Conn) (gosmtp.Session, error) { return &remoteSession{r: r}, nil }))
	srv.Domain = "mx.remote.example"
	srv.EnableSMTPUTF8 = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	r.addr = ln.Addr().String()
	return r
}

type remoteSession struct {
	r    *remoteMX
	from string
	to   []string
}

func (s *remoteSession) Mail(from string, opts *gosmtp.MailOptions) error {
	s.r.mu.Lock()
	s.r.utf8 = opts != nil && opts.UTF8
	s.r.mu.Unlock()
	s.from = from
	return nil
}
func (s *remoteSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	if s.r.refuse[to] {
		return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"}
	}
	s.to = append(s.to, to)
	return nil
}
func (s *remoteSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	if s.r.tempFail > 0 {
		s.r.tempFail--
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "try later"}
	}
	s.r.got <- delivered{s.from, s.to, b}
	return nil
}
func (s *remoteSession) Reset()        { s.from, s.to = "", nil }
func (s *remoteSession) Logout() error { return nil }

// nextHop records what an Outbound hands on.
type nextHop struct {
	got []delivered
	err error
}

func (h *nextHop) Relay(from string, to []string, msg []byte) error {
	if h.err != nil {
		return h.err
	}
	h.got = append(h.got, delivered{from, to, msg})
	return nil
}

const outMsg = "From: Alice <alice@example.org>\r\nTo: dave@remote.example\r\nSubject: out\r\n" +
	"Message-ID: <out-1@example.org>\r\n\r\nHello Dave.\r\n"

func TestOutboundSignsAndNeverRelaysForStrangers(t *testing.T) {
	dns := newFakeDNS()
	k := newDKIMKey(t, dns, "example.org")
	hop := &nextHop{}
	o := &gateway.Outbound{Domains: []string{"example.org"}, Keys: []gateway.DKIMKey{{Domain: "example.org", Selector: "s1", Signer: k.priv}}, Next: hop}

	err := o.Relay("spammer@elsewhere.example", []string{"victim@remote.example"}, []byte(outMsg))
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || len(hop.got) != 0 {
		t.Fatalf("a stranger's mail: %v, %d relayed; want 550, none", err, len(hop.got))
	}

	if err := o.Relay("alice@example.org", []string{"dave@remote.example"}, []byte(outMsg)); err != nil {
		t.Fatal(err)
	}
	if len(hop.got) != 1 {
		t.Fatalf("%d relayed", len(hop.got))
	}
	// The receiver's checks pass: the signature verifies against the
	// published key.
	v, err := gateway.Check(context.Background(), dns, gateway.Envelope{IP: goodIP, Helo: "mx.example.org", From: "alice@example.org"}, hop.got[0].msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.DKIM) != 1 || v.DKIM[0].Value != authres.ResultPass || v.DKIM[0].Domain != "example.org" {
		t.Errorf("DKIM %+v", v.DKIM)
	}
	// A client's retry is not sent twice.
	if err := o.Relay("alice@example.org", []string{"dave@remote.example"}, []byte(outMsg)); err != nil || len(hop.got) != 1 {
		t.Errorf("retry: %v, %d relayed; want nil, 1", err, len(hop.got))
	}
	// A failed hand-over is not remembered.
	hop.err = errors.New("smarthost down")
	msg2 := strings.Replace(outMsg, "out-1", "out-2", 1)
	if err := o.Relay("alice@example.org", []string{"dave@remote.example"}, []byte(msg2)); err == nil {
		t.Fatal("failure not reported")
	}
	hop.err = nil
	if err := o.Relay("alice@example.org", []string{"dave@remote.example"}, []byte(msg2)); err != nil || len(hop.got) != 2 {
		t.Errorf("after a failure: %v, %d relayed; want nil, 2", err, len(hop.got))
	}
}

// timers collects DirectMX's retry timers; the test fires them.
type timers struct {
	mu     sync.Mutex
	delays []time.Duration
	fire   chan func()
}

func (tm *timers) after(d time.Duration, f func()) {
	tm.mu.Lock()
	tm.delays = append(tm.delays, d)
	tm.mu.Unlock()
	tm.fire <- f
}

func directMX(t *testing.T, r *remoteMX) (*gateway.DirectMX, *timers, chan []byte) {
	dns := newFakeDNS()
	dns.mx["remote.example"] = []*net.MX{{Host: "mx.remote.example.", Pref: 10}}
	dns.mx["nullmx.example"] = []*net.MX{{Host: ".", Pref: 0}}
	_, port, _ := net.SplitHostPort(r.addr)
	tm := &timers{fire: make(chan func(), 16)}
	bounces := make(chan []byte, 16)
	d := &gateway.DirectMX{
		Resolver: dns, Port: port, Hostname: "mx.example.org", Log: env.Discard,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, p, _ := net.SplitHostPort(addr)
			if host != "mx.remote.example" {
				return nil, errors.New("test: dial " + addr)
			}
			var nd net.Dialer
			return nd.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", p))
		},
		RetryBase: time.Minute, RetryMax: 4 * time.Minute, After: tm.after,
		Bounce: func(to string, msg []byte) {
			if to != "alice@example.org" {
				t.Errorf("bounce to %s", to)
			}
			bounces <- msg
		},
	}
	return d, tm, bounces
}

func recv[T any](t *testing.T, ch chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("no %s", what)
	}
	var zero T
	return zero
}

func TestDirectMXDelivers(t *testing.T) {
	r := startRemoteMX(t)
	d, _, _ := directMX(t, r)
	if err := d.Relay("alice@example.org", []string{"dave@remote.example"}, []byte(outMsg)); err != nil {
		t.Fatal(err)
	}
	got := recv(t, r.got, "delivery")
	if got.from != "alice@example.org" || len(got.to) != 1 || !bytes.Equal(got.msg, []byte(outMsg)) {
		t.Errorf("delivered %+v", got)
	}
}

// An internationalised recipient goes out with SMTPUTF8; plain ones
// without it, so exchangers that lack it still take them.
func TestDirectMXUsesSMTPUTF8ForInternationalAddresses(t *testing.T) {
	r := startRemoteMX(t)
	d, _, _ := directMX(t, r)
	for _, c := range []struct {
		to   string
		utf8 bool
	}{{"dörte@remote.example", true}, {"dave@remote.example", false}} {
		if err := d.Relay("alice@example.org", []string{c.to}, []byte(outMsg)); err != nil {
			t.Fatal(err)
		}
		got := recv(t, r.got, "delivery")
		r.mu.Lock()
		utf8 := r.utf8
		r.mu.Unlock()
		if len(got.to) != 1 || got.to[0] != c.to || utf8 != c.utf8 {
			t.Errorf("to %s: delivered %v with SMTPUTF8 %v, want %v", c.to, got.to, utf8, c.utf8)
		}
	}
}

func TestDirectMXRetriesWithBackoffThenBounces(t *testing.T) {
	r := startRemoteMX(t)
	r.tempFail = 2
	d, tm, bounces := directMX(t, r)
	if err := d.Relay("alice@example.org", []string{"dave@remote.example"}, []byte(outMsg)); err != nil {
		t.Fatal(err)
	}
	recv(t, tm.fire, "first retry")()
	recv(t, tm.fire, "second retry")()
	recv(t, r.got, "delivery after two temporary failures")
	tm.mu.Lock()
	if len(tm.delays) != 2 || tm.delays[0] != time.Minute || tm.delays[1] != 2*time.Minute {
		t.Errorf("retry delays %v, want [1m 2m]", tm.delays)
	}
	tm.mu.Unlock()

	// A refused recipient bounces at once; the accepted one is delivered.
	r.mu.Lock()
	r.refuse["gone@remote.example"] = true
	r.mu.Unlock()
	if err := d.Relay("alice@example.org", []string{"dave@remote.example", "gone@remote.example", "x@nullmx.example"}, []byte(outMsg)); err != nil {
		t.Fatal(err)
	}
	got := recv(t, r.got, "delivery to the accepted recipient")
	if len(got.to) != 1 || got.to[0] != "dave@remote.example" {
		t.Errorf("delivered to %v", got.to)
	}
	b := string(recv(t, bounces, "bounce"))
	for _, want := range []string{"<gone@remote.example>", "550", "<x@nullmx.example>", "null MX", "Subject: out"} {
		if !strings.Contains(b, want) {
			t.Errorf("bounce lacks %q:\n%s", want, b)
		}
	}
	if strings.Contains(b, "<dave@remote.example>:") {
		t.Errorf("bounce names the delivered recipient:\n%s", b)
	}
}

func TestDirectMXQueueIsBounded(t *testing.T) {
	r := startRemoteMX(t)
	r.tempFail = 1
	d, tm, _ := directMX(t, r)
	d.MaxQueue = 1
	if err := d.Relay("alice@example.org", []string{"dave@remote.example"}, []byte(outMsg)); err != nil {
		t.Fatal(err)
	}
	retry := recv(t, tm.fire, "retry") // the first message waits in the queue
	var se *gosmtp.SMTPError
	if err := d.Relay("alice@example.org", []string{"dave@remote.example"}, []byte(outMsg)); !errors.As(err, &se) || se.Code != 452 {
		t.Fatalf("second message with a full queue: %v, want 452", err)
	}
	retry()
	recv(t, r.got, "delivery")
}

func TestDirectMXClose(t *testing.T) {
	r := startRemoteMX(t)
	r.tempFail = 1
	d, tm, _ := directMX(t, r)
	if err := d.Relay("alice@example.org", []string{"dave@remote.example"}, []byte(outMsg)); err != nil {
		t.Fatal(err)
	}
	retry := recv(t, tm.fire, "retry")
	d.Close()
	var se *gosmtp.SMTPError
	if err := d.Relay("alice@example.org", []string{"dave@remote.example"}, []byte(outMsg)); !errors.As(err, &se) || se.Code != 421 {
		t.Errorf("Relay after Close: %v, want 421", err)
	}
	retry() // the pending retry is dropped
	if n := d.Queued(); n != 0 {
		t.Errorf("%d queued after Close", n)
	}
	select {
	case got := <-r.got:
		t.Errorf("delivered after Close: %+v", got)
	default:
	}
}

// TestDirectMXSpoolSurvivesARestart: a message accepted for outside
// delivery is on disk before Relay returns; a gateway that stops before
// delivering it sends it after the restart, and the spool empties.
func TestDirectMXSpoolSurvivesARestart(t *testing.T) {
	r := startRemoteMX(t)
	r.tempFail = 1
	spool := t.TempDir()
	d, tm, _ := directMX(t, r)
	d.Spool = spool
	if err := d.Relay("alice@example.org", []string{"dave@remote.example"}, []byte(outMsg)); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(spool, "*.json"))
	if len(files) != 1 {
		t.Fatalf("%d spool files after Relay, want 1", len(files))
	}
	recv(t, tm.fire, "the first attempt failing and scheduling a retry")
	d.Close() // the process stops; the retry timer dies with it

	again, _, _ := directMX(t, r)
	again.Spool = spool
	n, err := again.Resume()
	if err != nil || n != 1 {
		t.Fatalf("Resume: %d, %v", n, err)
	}
	got := recv(t, r.got, "delivery after the restart")
	if len(got.to) != 1 || got.to[0] != "dave@remote.example" {
		t.Fatalf("delivered to %v", got.to)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		files, _ = filepath.Glob(filepath.Join(spool, "*.json"))
		if len(files) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spool still holds %v after delivery", files)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
