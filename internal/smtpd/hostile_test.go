package smtpd

// Hostile clients: password guessing, relay attempts, oversized input,
// slow or silent connections and malformed MIME, each against a real
// server on loopback with real clients (go-smtp's, a raw socket, and
// Python's smtplib).

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
)

// TestAuthThrottledPerUsername: failures count against the username
// (from anywhere) and, with a larger allowance, against the address;
// while alice's name is locked out, bob still logs in from the same
// address, and the lockout doubles on the injected clock.
func TestAuthThrottledPerUsername(t *testing.T) {
	r := newRig(t, func(c *Config) {
		c.AuthLimit = AuthLimit{Free: 3, FreePerIP: 8, Base: time.Minute, Max: 10 * time.Minute, Forget: time.Hour}
	})
	for i := range 3 {
		c := r.dial() // a fresh connection each time: the count is not per connection
		wantCode(t, fmt.Sprintf("alice wrong password %d", i+1), c.Auth(sasl.NewPlainClient("", alice, "guess")), 535)
	}
	wantCode(t, "alice locked out", r.dial().Auth(sasl.NewPlainClient("", alice, "alice-pw")), 454)
	wantCode(t, "ALICE locked out too", r.dial().Auth(sasl.NewPlainClient("", "ALICE@example.org", "alice-pw")), 454)
	r.login(bob, "bob-pw") // another user on the same address is not affected

	r.clock.Advance(time.Minute + time.Second)
	wantCode(t, "alice fourth wrong password", r.dial().Auth(sasl.NewPlainClient("", alice, "guess")), 535)
	r.clock.Advance(time.Minute + time.Second) // the lockout doubled to 2 min
	wantCode(t, "alice still locked", r.dial().Auth(sasl.NewPlainClient("", alice, "alice-pw")), 454)
	r.clock.Advance(time.Minute)
	r.login(alice, "alice-pw")

	// Guessing across many usernames locks the address out: 4 failures
	// so far, 4 more reach FreePerIP, and then even bob is refused.
	for i := range 4 {
		wantCode(t, fmt.Sprintf("user%d", i), r.dial().Auth(sasl.NewPlainClient("", fmt.Sprintf("user%d@example.org", i), "x")), 535)
	}
	wantCode(t, "address locked out", r.dial().Auth(sasl.NewPlainClient("", bob, "bob-pw")), 454)
	st := r.srv.Stats()
	if st.AuthFailed != 8 || st.AuthLocked != 4 || st.AuthOK != 2 {
		t.Fatalf("stats %+v, want 8 failed, 4 locked, 2 ok", st)
	}
}

// TestLimiterPerUsernameAcrossAddresses: a username's lockout holds
// whatever address the next guess comes from.
func TestLimiterPerUsernameAcrossAddresses(t *testing.T) {
	clock := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := newAuthLimiter(AuthLimit{Free: 2, Base: time.Second, Max: time.Minute, Forget: time.Hour}, clock.Now)
	if l.cfg.FreePerIP != 8 {
		t.Fatalf("FreePerIP default %d, want 4*Free", l.cfg.FreePerIP)
	}
	for i := range 2 {
		l.fail(fmt.Sprintf("192.0.2.%d", i), l.cfg.FreePerIP)
		l.fail(userKey("Alice@example.org"), l.cfg.Free)
	}
	if l.lockedFor(userKey("alice@EXAMPLE.org")) != time.Second {
		t.Fatalf("alice not locked after failures from two addresses")
	}
	if l.lockedFor("192.0.2.0") != 0 || l.lockedFor("192.0.2.1") != 0 {
		t.Fatal("an address with one failure is locked")
	}
}

// TestLimiterMemoryBounded: a flood of distinct usernames, none expired,
// keeps the table at maxTracked records.
func TestLimiterMemoryBounded(t *testing.T) {
	clock := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := newAuthLimiter(AuthLimit{}, clock.Now)
	for i := range maxTracked + 500 {
		l.fail(userKey(fmt.Sprintf("u%d@example.org", i)+strings.Repeat("x", 1000)), 5)
		clock.Advance(time.Millisecond)
	}
	if n := len(l.recs); n > maxTracked {
		t.Fatalf("%d records tracked, bound %d", n, maxTracked)
	}
	for k := range l.recs {
		if len(k) > maxKeyLen {
			t.Fatalf("key of %d bytes kept", len(k))
		}
	}
	// The oldest went, the newest stayed.
	if _, ok := l.recs[userKey(fmt.Sprintf("u%d@example.org", maxTracked+499)+strings.Repeat("x", 1000))]; !ok {
		t.Fatal("the newest record was evicted")
	}
}

// TestRelayRefusalsCounted: every way of using the server as a relay is
// refused with its code, and counted.
func TestRelayRefusalsCounted(t *testing.T) {
	r := newRig(t, nil) // no Outbound
	c := r.dial()
	wantCode(t, "MAIL without AUTH", c.Mail(alice, nil), 530)
	c = r.login(alice, "alice-pw")
	wantCode(t, "MAIL FROM another user", c.Mail(bob, nil), 553)
	wantCode(t, "MAIL FROM outside", c.Mail("boss@bank.example", nil), 553)
	if err := c.Mail(alice, nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "RCPT outside", c.Rcpt("victim@elsewhere.example", nil), 550)
	if err := c.Noop(); err != nil {
		t.Fatalf("NOOP after the refusals: %v", err)
	}
	if st := r.srv.Stats(); st.RelayRefused != 4 || st.Refused != 4 {
		t.Fatalf("stats %+v, want 4 relay refusals", st)
	}
}

// TestHugeInput: an oversized message (552, counted), too many
// recipients (452), and a command line over go-smtp's 2000 bytes (500,
// then the server hangs up); the server keeps serving.
func TestHugeInput(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxMessageBytes = 4096; c.MaxRecipients = 1 })
	c := r.login(alice, "alice-pw")
	if err := c.Mail(alice, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(bob, nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "second RCPT", c.Rcpt(alice, nil), 452)
	wantCode(t, "DATA over MaxMessageBytes", data(c, message(alice, bob, strings.Repeat("yyyyyyy\r\n", 1000))), 552)

	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute)) // a guard against a hang, not a timing
	br := bufio.NewReader(conn)
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "220") {
		t.Fatalf("greeting %q, %v", l, err)
	}
	// Over the 2000-byte limit, but in one segment that the server reads
	// whole, so its close does not reset unread data.
	fmt.Fprintf(conn, "NOOP %s\r\n", strings.Repeat("x", 3000))
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading to EOF: %v", err)
	}
	if !strings.HasPrefix(string(rest), "500 ") {
		t.Fatalf("long line answered %q", rest)
	}
	if err := r.dial().Noop(); err != nil {
		t.Fatalf("server unusable after a long line: %v", err)
	}
	if st := r.srv.Stats(); st.TooLarge != 1 {
		t.Fatalf("TooLarge %d, want 1", st.TooLarge)
	}
}

// TestSilentClientTimesOut: a client that connects and says nothing, or
// stops in the middle of DATA, is answered 421 and disconnected after
// ReadTimeout; the test waits for the server to hang up (EOF), not for
// a time.
func TestSilentClientTimesOut(t *testing.T) {
	r := newRig(t, func(c *Config) { c.ReadTimeout = 200 * time.Millisecond })
	silent := func(what string, script string) {
		t.Helper()
		conn, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(time.Minute)) // a guard against a hang
		if script != "" {
			io.WriteString(conn, script)
		}
		all, err := io.ReadAll(conn)
		if err != nil {
			t.Fatalf("%s: reading to EOF: %v", what, err)
		}
		if !strings.Contains(string(all), "421 4.4.2") {
			t.Fatalf("%s: server said %q before hanging up", what, all)
		}
	}
	silent("silent after connecting", "")
	silent("stopped in DATA", "EHLO x\r\nAUTH PLAIN "+plainIR(alice, "alice-pw")+"\r\nMAIL FROM:<"+alice+">\r\nRCPT TO:<"+bob+">\r\nDATA\r\nSubject: half\r\n")
	if st := r.srv.Stats(); st.TimedOut != 2 {
		t.Fatalf("TimedOut %d, want 2", st.TimedOut)
	}
	if r.mail.sendCount() != 0 {
		t.Fatal("half a message was sent")
	}
}

func plainIR(user, pw string) string {
	c := sasl.NewPlainClient("", user, pw)
	_, ir, _ := c.Start()
	return base64.StdEncoding.EncodeToString(ir)
}

// TestConnectionsPerIPCounted: past MaxConnectionsPerIP a connection is
// answered 421 and closed, and counted.
func TestConnectionsPerIPCounted(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxConnectionsPerIP = 1 })
	c := r.dial()
	if err := c.Noop(); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	all, _ := io.ReadAll(conn)
	if !strings.HasPrefix(string(all), "421 ") {
		t.Fatalf("second connection got %q", all)
	}
	if st := r.srv.Stats(); st.ConnRefused != 1 {
		t.Fatalf("ConnRefused %d, want 1", st.ConnRefused)
	}
}

// malformedMessages are broken in the ways hostile or buggy senders
// break MIME.
func malformedMessages() map[string][]byte {
	var deep bytes.Buffer
	deep.WriteString("From: alice@example.org\r\nTo: bob@example.org\r\nSubject: deep\r\n")
	for i := range 2000 {
		fmt.Fprintf(&deep, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
	}
	deep.WriteString("Content-Type: text/plain\r\n\r\nbottom\r\n")
	var headers bytes.Buffer
	headers.WriteString("From: alice@example.org\r\nTo: bob@example.org\r\nSubject: many headers\r\n")
	for i := range 10000 {
		fmt.Fprintf(&headers, "X-H%d: %d\r\n", i, i)
	}
	headers.WriteString("\r\nbody\r\n")
	return map[string][]byte{
		"unterminated multipart": []byte("From: alice@example.org\r\nTo: bob@example.org\r\nSubject: unterminated\r\n" +
			"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nno closing boundary\r\n"),
		"bad base64": []byte("From: alice@example.org\r\nTo: bob@example.org\r\nSubject: base64\r\nContent-Type: text/plain\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64 at all===\r\n"),
		"bad charset": []byte("From: =?x-unknown?B?////?= <alice@example.org>\r\nTo: bob@example.org\r\nSubject: =?utf-8?Q?=FF=FE?=\r\n" +
			"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\n\xff\xfe\xfd\r\n"),
		"deep nesting":    deep.Bytes(),
		"10000 headers":   headers.Bytes(),
		"no boundary":     []byte("From: alice@example.org\r\nTo: bob@example.org\r\nContent-Type: multipart/alternative\r\n\r\n--\r\n--\r\n"),
		"bare LF and NUL": []byte("From: alice@example.org\nTo: bob@example.org\nSubject: \x00\n\n\x00\x01\n"),
	}
}

// TestMalformedMIMEWithSmtplib: Python's smtplib submits each broken
// message; the server answers each (250 or a refusal), never hangs or
// crashes, and a normal submission works afterwards.
func TestMalformedMIMEWithSmtplib(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is required for this test (smtplib)")
	}
	r := newRig(t, func(c *Config) { c.MaxMessageBytes = 4 << 20 })
	dir := t.TempDir()
	var files []string
	names := map[string]string{}
	for name, msg := range malformedMessages() {
		f := filepath.Join(dir, fmt.Sprintf("m%d.eml", len(files)))
		if err := os.WriteFile(f, msg, 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		names[f] = name
	}
	_, port, _ := net.SplitHostPort(r.addr)
	out, err := exec.Command(python, append([]string{"-c", smtplibMalformed, port}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("python smtplib: %v\n%s", err, out)
	}
	var got map[string]int
	if err := json.Unmarshal(bytes.TrimSpace(out), &got); err != nil {
		t.Fatalf("smtplib output %q: %v", out, err)
	}
	for _, f := range files {
		code, ok := got[f]
		if !ok || (code != 250 && code < 400) {
			t.Errorf("%s: answered %d (present %v)", names[f], code, ok)
		}
	}
	if got["after"] != 250 {
		t.Fatalf("normal message after the malformed ones: %d", got["after"])
	}
	if n := r.mail.sendCount(); n < 2 {
		t.Fatalf("%d sends reached POST", n)
	}
}

const smtplibMalformed = `
import json, smtplib, sys
port = int(sys.argv[1])
A, B = 'alice@example.org', 'bob@example.org'
out = {}
def send(data):
    s = smtplib.SMTP('127.0.0.1', port, timeout=120)
    try:
        s.login(A, 'alice-pw')
        s.sendmail(A, [B], data, mail_options=['BODY=8BITMIME'])
        return 250
    except smtplib.SMTPRecipientsRefused as e:
        return list(e.recipients.values())[0][0]
    except smtplib.SMTPResponseException as e:
        return e.smtp_code
    finally:
        s.close()
for f in sys.argv[2:]:
    out[f] = send(open(f, 'rb').read())
out['after'] = send(b'From: alice@example.org\r\nTo: bob@example.org\r\nSubject: fine\r\n\r\nfine\r\n')
print(json.dumps(out))
`
