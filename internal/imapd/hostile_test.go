package imapd_test

// Hostile clients against a real server on a real node: password
// guessing, oversized literals and commands, too many connections,
// silent connections, and malformed MIME, with go-imap's client, raw
// sockets and Python's imaplib.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/epost-mail/epost/internal/imapd"
)

// testClock is the login limiter's injected clock.
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

// serveHostile starts an IMAP server for alice on node 0 with cfg, and
// returns it with its address.
func (c *community) serveHostile(t *testing.T, cfg imapd.Config) (*imapd.Server, string) {
	t.Helper()
	cfg.Loop, cfg.Mail, cfg.Auth = c.nodes[0], c.nodes[0].Mail, passwords{alice: "alice-pw"}
	cfg.InsecureAuth = true
	if cfg.Log == nil {
		cfg.Log = slog.New(&c.panics)
	}
	srv := imapd.New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	go srv.Serve(ln)
	return srv, ln.Addr().String()
}

func responseCode(err error) imap.ResponseCode {
	var ierr *imap.Error
	if errors.As(err, &ierr) {
		return ierr.Code
	}
	return ""
}

// TestLoginThrottled: failures count per username and, with a larger
// allowance, per address; a locked-out username does not stop another
// user, the address's lockout does, and both end on the injected clock.
// LOGIN and AUTHENTICATE are limited alike.
func TestLoginThrottled(t *testing.T) {
	c := startCommunity(t)
	clock := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	srv, addr := c.serveHostile(t, imapd.Config{
		AuthLimit: imapd.AuthLimit{Free: 3, FreePerIP: 6, Base: time.Minute, Max: 10 * time.Minute, Forget: time.Hour},
		Now:       clock.Now,
	})
	login := func(user, pw string) error {
		t.Helper()
		cl, err := imapclient.DialInsecure(addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		return cl.Login(user, pw).Wait()
	}
	want := func(what string, err error, code imap.ResponseCode) {
		t.Helper()
		if got := responseCode(err); got != code {
			t.Fatalf("%s: %v (code %q), want [%s]", what, err, got, code)
		}
	}
	for i := range 3 {
		want(fmt.Sprintf("eve's guess %d", i+1), login("eve@example.org", "guess"), imap.ResponseCodeAuthenticationFailed)
	}
	want("eve locked out", login("eve@example.org", "guess"), imap.ResponseCodeUnavailable)
	if err := login(alice, "alice-pw"); err != nil {
		t.Fatalf("alice, while eve is locked out: %v", err)
	}
	for i := range 3 {
		want(fmt.Sprintf("alice's guess %d", i+1), login(alice, "guess"), imap.ResponseCodeAuthenticationFailed)
	}
	want("alice locked out", login(alice, "alice-pw"), imap.ResponseCodeUnavailable)
	cl, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	want("AUTHENTICATE PLAIN locked out", cl.Authenticate(sasl.NewPlainClient("", alice, "alice-pw")), imap.ResponseCodeUnavailable)
	if err := cl.Noop().Wait(); err != nil {
		t.Fatalf("NOOP after a refused login: %v", err)
	}
	clock.Advance(time.Minute + time.Second)
	if err := login(alice, "alice-pw"); err != nil {
		t.Fatalf("alice after the lockout: %v", err)
	}
	if st := srv.Stats(); st.LoginFailed != 6 || st.LoginThrottled != 3 || st.LoginOK != 2 {
		t.Fatalf("stats %+v, want 6 failed, 3 throttled, 2 ok", st)
	}
}

// rawConn is a line-level IMAP client on a real socket.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(2 * time.Minute)) // a guard against a hang, not a timing
	r := &rawConn{t: t, conn: conn, br: bufio.NewReader(conn)}
	if l := r.line(); !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting %q", l)
	}
	return r
}

func (r *rawConn) line() string {
	r.t.Helper()
	l, err := r.br.ReadString('\n')
	if err != nil {
		r.t.Fatalf("read: %v (after %q)", err, l)
	}
	return l
}

// cmd sends line and returns the tagged reply to tag.
func (r *rawConn) cmd(tag, line string) string {
	r.t.Helper()
	r.send(line)
	return r.expect(tag, false)
}

// expect reads until the tagged reply to tag, or a continuation
// request ("+") when plus is set.
func (r *rawConn) expect(tag string, plus bool) string {
	r.t.Helper()
	for {
		l := r.line()
		if strings.HasPrefix(l, tag+" ") || plus && strings.HasPrefix(l, "+") {
			return l
		}
	}
}

func (r *rawConn) send(line string) { fmt.Fprintf(r.conn, "%s\r\n", line) }

// collect sends line and returns the untagged replies before the tagged
// reply to tag, and that reply.
func (r *rawConn) collect(tag, line string) ([]string, string) {
	r.t.Helper()
	r.send(line)
	var untagged []string
	for {
		l := r.line()
		if strings.HasPrefix(l, tag+" ") {
			return untagged, l
		}
		untagged = append(untagged, strings.TrimRight(l, "\r\n"))
	}
}

// untilEOF reads until the server hangs up.
func (r *rawConn) untilEOF() string {
	r.t.Helper()
	rest, err := io.ReadAll(r.br)
	if err != nil {
		r.t.Fatalf("waiting for the server to hang up: %v (after %q)", err, rest)
	}
	return string(rest)
}

// TestSilentConnectionsTimeOut: a client that says nothing before login
// is disconnected after LoginTimeout, while a logged-in client in IDLE
// is not (it may idle for IdleTimeout, at least 30 min by default, RFC
// 9051 section 5.4); with a short IdleTimeout, an idling client is
// disconnected too. The test awaits the server's hang-up, not a time.
func TestSilentConnectionsTimeOut(t *testing.T) {
	if imapd.DefaultIdleTimeout < 30*time.Minute {
		t.Fatalf("DefaultIdleTimeout %v is under RFC 9051's 30 min", imapd.DefaultIdleTimeout)
	}
	c := startCommunity(t)
	srv, addr := c.serveHostile(t, imapd.Config{LoginTimeout: time.Second, IdleTimeout: time.Hour})
	idler := dialRaw(t, addr)
	idler.send("l LOGIN " + alice + " alice-pw")
	if l := idler.expect("l", false); !strings.HasPrefix(l, "l OK") {
		t.Fatalf("LOGIN: %q", l)
	}
	idler.send("i IDLE")
	if l := idler.expect("i", true); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	silent := dialRaw(t, addr)
	silent.untilEOF()
	// The idler has been idle longer than LoginTimeout by now, and is
	// still served.
	idler.send("DONE")
	if l := idler.expect("i", false); !strings.HasPrefix(l, "i OK") {
		t.Fatalf("IDLE after the silent client was dropped: %q", l)
	}
	if l := idler.cmd("n", "n NOOP"); !strings.HasPrefix(l, "n OK") {
		t.Fatalf("NOOP: %q", l)
	}
	if st := srv.Stats(); st.TimedOut != 1 {
		t.Fatalf("TimedOut %d, want 1", st.TimedOut)
	}

	srv2, addr2 := c.serveHostile(t, imapd.Config{IdleTimeout: time.Second})
	idler2 := dialRaw(t, addr2)
	idler2.send("l LOGIN " + alice + " alice-pw")
	idler2.expect("l", false)
	idler2.send("i IDLE")
	idler2.expect("i", true)
	idler2.untilEOF()
	if st := srv2.Stats(); st.TimedOut != 1 {
		t.Fatalf("IdleTimeout: TimedOut %d, want 1", st.TimedOut)
	}
}

// TestHugeInputRefused: an APPEND over AppendLimit (NO [TOOBIG], before
// the client sends the bytes), a big literal outside APPEND (never asked
// for: NO [TOOBIG] at once for a synchronizing one, BAD [TOOBIG] and a
// hang-up for a non-synchronizing one), a command line past go-imap's
// 50 KiB, and connections past MaxConnectionsPerIP are refused; the
// session or at least the server keeps serving. IdleTimeout is far past
// the raw client's own guard, and no read may time out: the refusals
// come without waiting for a deadline.
func TestHugeInputRefused(t *testing.T) {
	c := startCommunity(t)
	srv, addr := c.serveHostile(t, imapd.Config{AppendLimit: 1000, MaxConnectionsPerIP: 2, LoginTimeout: time.Hour, IdleTimeout: time.Hour})
	r := dialRaw(t, addr)
	// Before login, too.
	if l := r.cmd("a", "a LOGIN {10485760}"); !strings.HasPrefix(l, "a NO [TOOBIG]") {
		t.Fatalf("LOGIN with a 10 MiB literal: %q", l)
	}
	if l := r.cmd("l", "l LOGIN "+alice+" alice-pw"); !strings.HasPrefix(l, "l OK") {
		t.Fatalf("LOGIN: %q", l)
	}
	r.send("b APPEND Drafts {5000}")
	if l := r.expect("b", true); !strings.HasPrefix(l, "b NO [TOOBIG]") {
		t.Fatalf("APPEND over AppendLimit: %q", l)
	}
	if l := r.cmd("n", "n NOOP"); !strings.HasPrefix(l, "n OK") {
		t.Fatalf("NOOP after the refusal: %q", l)
	}
	r.send("a CREATE {100000}")
	if l := r.expect("a", true); !strings.HasPrefix(l, "a NO [TOOBIG]") {
		t.Fatalf("CREATE with a 100000-byte literal: %q", l)
	}
	if l := r.cmd("n", "n NOOP"); !strings.HasPrefix(l, "n OK") {
		t.Fatalf("NOOP after the refusals: %q", l)
	}
	// A small literal is still asked for and taken, an oversized one
	// after it ends the connection; the first one named no folder.
	r.send("c RENAME {5}")
	if l := r.expect("c", true); !strings.HasPrefix(l, "+") {
		t.Fatalf("RENAME with a 5-byte literal: %q", l)
	}
	r.send("Draft {9000}")
	if rest := r.untilEOF(); !strings.Contains(rest, "c BAD [TOOBIG]") || !strings.Contains(rest, "* BYE") {
		t.Fatalf("an oversized second literal: %q", rest)
	}
	// A non-synchronizing literal over the limit: its bytes are on their
	// way, so the server answers and hangs up.
	r = dialRaw(t, addr)
	r.send("d LOGIN {10485760+}")
	if rest := r.untilEOF(); !strings.HasPrefix(rest, "d BAD [TOOBIG]") {
		t.Fatalf("LOGIN with a non-synchronizing 10 MiB literal: %q", rest)
	}
	r = dialRaw(t, addr)
	if l := r.cmd("l", "l LOGIN "+alice+" alice-pw"); !strings.HasPrefix(l, "l OK") {
		t.Fatalf("LOGIN: %q", l)
	}
	// Connections: r is one, a second is allowed, a third gets BYE.
	second := dialRaw(t, addr)
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	third.SetDeadline(time.Now().Add(2 * time.Minute))
	if bye, _ := io.ReadAll(third); !strings.HasPrefix(string(bye), "* BYE") {
		t.Fatalf("third connection from one address: %q", bye)
	}
	// A command line over 50 KiB: the server gives up on the connection.
	r.send("s SEARCH TEXT \"" + strings.Repeat("x", 60<<10) + "\"")
	if rest := r.untilEOF(); strings.Contains(rest, "s OK") {
		t.Fatalf("a 60 KiB command line was served: %q", rest)
	}
	if l := second.cmd("l", "l LOGIN "+alice+" alice-pw"); !strings.HasPrefix(l, "l OK") {
		t.Fatalf("LOGIN on another connection: %q", l)
	}
	if st := srv.Stats(); st.TooLarge != 5 || st.ConnRefused != 1 || st.TimedOut != 0 {
		t.Fatalf("stats %+v, want 5 too large, 1 connection refused, no time-out", st)
	}
}

// TestInvalidUTF8Names: a mailbox name that is not UTF-8 or has bad
// modified UTF-7, quoted or as a literal, in every command that takes
// one, is answered BAD with a reason, not NO [SERVERBUG]; nothing is
// created, the session goes on, and good names with "&" still work.
func TestInvalidUTF8Names(t *testing.T) {
	c := startCommunity(t)
	_, addr := c.serveHostile(t, imapd.Config{})
	r := dialRaw(t, addr)
	if l := r.cmd("l", "l LOGIN "+alice+" alice-pw"); !strings.HasPrefix(l, "l OK") {
		t.Fatalf("LOGIN: %q", l)
	}
	const bad = "\"bad\xff\xfe\""
	for _, cmd := range []string{
		"CREATE " + bad, "DELETE " + bad, "RENAME " + bad + " Fine", "RENAME Drafts " + bad,
		"SELECT " + bad, "EXAMINE " + bad, "STATUS " + bad + " (MESSAGES)", "SUBSCRIBE " + bad,
		"UNSUBSCRIBE " + bad, "LIST \"\" " + bad, "LSUB \"\" " + bad, "APPEND " + bad + " {5}",
	} {
		l := r.cmd("x", "x "+cmd)
		if !strings.HasPrefix(l, "x BAD") || !strings.Contains(l, "UTF-8") {
			t.Errorf("%q: %q", cmd, l)
		}
		if l := r.cmd("n", "n NOOP"); !strings.HasPrefix(l, "n OK") {
			t.Fatalf("NOOP after %q: %q", cmd, l)
		}
	}
	// Modified UTF-7 gone wrong: an open shift, encoded ASCII, a
	// control character.
	for _, name := range []string{`"a&b"`, `"a&AGE-"`, "\"a\x01b\""} {
		if l := r.cmd("x", "x CREATE "+name); !strings.HasPrefix(l, "x BAD") || !strings.Contains(l, "UTF-7") {
			t.Errorf("CREATE %q: %q", name, l)
		}
	}
	// As a literal, alone or followed by more.
	for _, lit := range []struct{ cmd, name, rest string }{
		{"CREATE", "bad\xff\xfe", ""}, {"RENAME", "bad\xff\xfe", " Fine"}, {"RENAME", "a&b", " {4}"},
	} {
		r.send(fmt.Sprintf("y %s {%d}", lit.cmd, len(lit.name)))
		if l := r.expect("y", true); !strings.HasPrefix(l, "+") {
			t.Fatalf("%s with a literal: %q", lit.cmd, l)
		}
		r.send(lit.name + lit.rest)
		if l := r.expect("y", false); !strings.HasPrefix(l, "y BAD") || !strings.Contains(l, "UTF-8") {
			t.Errorf("%s with a literal name %q: %q", lit.cmd, lit.name, l)
		}
		if l := r.cmd("n", "n NOOP"); !strings.HasPrefix(l, "n OK") {
			t.Fatalf("NOOP after a literal name %q: %q", lit.name, l)
		}
	}
	// Good names with "&": quoted, and as a literal.
	const good = "&AOk-t&AOk- &- b"
	if l := r.cmd("g", `g CREATE "`+good+`"`); !strings.HasPrefix(l, "g OK") {
		t.Fatalf("CREATE a good modified UTF-7 name: %q", l)
	}
	r.send(fmt.Sprintf("h DELETE {%d}", len(good)))
	if l := r.expect("h", true); !strings.HasPrefix(l, "+") {
		t.Fatalf("DELETE with a literal: %q", l)
	}
	if l := r.cmd("h", good); !strings.HasPrefix(l, "h OK") {
		t.Fatalf("DELETE a good modified UTF-7 name as a literal: %q", l)
	}
	// In the selected state: COPY and MOVE.
	if l := r.cmd("s", "s SELECT INBOX"); !strings.HasPrefix(l, "s OK") {
		t.Fatalf("SELECT INBOX: %q", l)
	}
	for _, cmd := range []string{"COPY 1:* " + bad, "UID MOVE 1:* " + bad} {
		if l := r.cmd("x", "x "+cmd); !strings.HasPrefix(l, "x BAD") || !strings.Contains(l, "UTF-8") {
			t.Errorf("%q: %q", cmd, l)
		}
	}
	if l := r.cmd("z", "z LIST \"\" *"); strings.Contains(l, "bad") || !strings.HasPrefix(l, "z OK") {
		t.Fatalf("LIST: %q", l)
	}
}

// TestMalformedMIME: broken messages delivered through POST (as SMTP
// submission delivers them) and APPENDed are FETCHed (BODYSTRUCTURE,
// ENVELOPE, BODY[1], BODY[TEXT], BINARY[1]) and searched, by go-imap's
// client and by Python's imaplib; every command is answered OK or NO,
// and a normal command works after each.
func TestMalformedMIME(t *testing.T) {
	c := startCommunity(t)
	cl := dial(t, c, nil)
	box := newFolder(t, cl, "Hostile")
	st, err := cl.Status("INBOX", &imap.StatusOptions{UIDNext: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	msgs := imapd.BrokenMIME()
	names := make([]string, 0, len(msgs))
	for name := range msgs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		m := append([]byte("From: "+bob+"\r\nTo: "+alice+"\r\nMessage-ID: <"+unique("broken")+"@example.org>\r\n"), msgs[name]...)
		c.send(t, m)
		appendMsg(t, cl, box, m)
	}
	opts := &imap.FetchOptions{
		UID: true, Envelope: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
		BodySection: []*imap.FetchItemBodySection{
			{Part: []int{1}, Peek: true}, {Specifier: imap.PartSpecifierText, Peek: true},
			{Part: []int{1, 1}, Specifier: imap.PartSpecifierMIME, Peek: true},
		},
		BinarySection: []*imap.FetchItemBinarySection{{Part: []int{1}, Peek: true}},
	}
	check := func(what string, err error) {
		t.Helper()
		var ierr *imap.Error
		if err != nil && !(errors.As(err, &ierr) && ierr.Type == imap.StatusResponseTypeNo) {
			t.Fatalf("%s: %v", what, err)
		}
		if err := cl.Noop().Wait(); err != nil {
			t.Fatalf("NOOP after %s: %v", what, err)
		}
	}
	for _, mbox := range []string{"INBOX", box} {
		if _, err := cl.Select(mbox, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		set := imap.UIDSet{imap.UIDRange{Start: st.UIDNext, Stop: 0}}
		if mbox == box {
			set = imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}
		}
		got, err := cl.Fetch(set, opts).Collect()
		check(mbox+" FETCH", err)
		if len(got) != len(names) {
			t.Fatalf("%s: FETCH returned %d messages, want %d", mbox, len(got), len(names))
		}
		for _, m := range got {
			if m.Envelope == nil || m.BodyStructure == nil {
				t.Errorf("%s UID %d: no ENVELOPE or BODYSTRUCTURE", mbox, m.UID)
			}
		}
		for _, crit := range []*imap.SearchCriteria{
			{Text: []string{"bottom"}}, {Body: []string{"closing"}}, {Header: []imap.SearchCriteriaHeaderField{{Key: "X-H9999", Value: "9999"}}},
		} {
			data, err := cl.UIDSearch(crit, nil).Wait()
			check(fmt.Sprintf("%s SEARCH %+v", mbox, crit), err)
			if err == nil && len(data.AllUIDs()) == 0 {
				t.Errorf("%s SEARCH %+v found nothing", mbox, crit)
			}
		}
	}
	if p := c.panics.all(); len(p) > 0 {
		t.Fatalf("server panicked: %v", p)
	}

	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is required for this test (imaplib)")
	}
	host, port, _ := net.SplitHostPort(c.addr)
	out, err := exec.Command(python, "-c", imaplibMalformed, host, port, alice, "alice-pw", box).CombinedOutput()
	if err != nil {
		t.Fatalf("python imaplib: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("imaplib fetched %d", len(names))) {
		t.Fatalf("python imaplib: %s", out)
	}
}

const imaplibMalformed = `
import imaplib, sys
host, port, user, pw, box = sys.argv[1:6]
m = imaplib.IMAP4(host, int(port))
m.login(user, pw)
typ, _ = m.select('"' + box + '"', readonly=True)
assert typ == 'OK', typ
n = 0
for i in range(1, 100):
    typ, data = m.fetch(str(i), '(BODYSTRUCTURE ENVELOPE BODY.PEEK[1] BODY.PEEK[TEXT])')
    assert typ in ('OK', 'NO'), (i, typ, data)
    if typ == 'OK' and data and data[0] is not None:
        n += 1
    else:
        break
    assert m.noop()[0] == 'OK'
for crit in (('TEXT', 'bottom'), ('BODY', 'closing'), ('HEADER', 'X-H9999', '9999')):
    typ, data = m.search(None, *crit)
    assert typ in ('OK', 'NO'), (crit, typ, data)
    assert m.noop()[0] == 'OK'
m.logout()
print('imaplib fetched %d' % n)
`
