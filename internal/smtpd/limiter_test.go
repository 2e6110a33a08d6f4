package smtpd

import (
	"errors"
	"fmt"
	"github.com/epost-mail/epost/internal/mailnet"
	"net"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
)

func TestLimiterBacksOffExponentially(t *testing.T) {
	clock := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := newAuthLimiter(AuthLimit{Free: 2, Base: time.Second, Max: 5 * time.Second, Forget: time.Minute}, clock.Now)
	const ip = "192.0.2.1"
	want := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i, w := range want {
		if d := l.lockedFor(ip); d != 0 {
			t.Fatalf("failure %d: still locked for %v", i+1, d)
		}
		if got := l.fail(ip, 2); got != w {
			t.Fatalf("failure %d: lockout %v, want %v", i+1, got, w)
		}
		if w > 0 && l.lockedFor(ip) != w {
			t.Fatalf("failure %d: lockedFor %v, want %v", i+1, l.lockedFor(ip), w)
		}
		if l.lockedFor("192.0.2.2") != 0 {
			t.Fatal("another address is locked too")
		}
		clock.Advance(w)
	}
	// Forgotten a while after the last failure: free failures again.
	clock.Advance(time.Minute + time.Second)
	if got := l.fail(ip, 2); got != 0 {
		t.Fatalf("after Forget: lockout %v, want 0", got)
	}
}

func TestLimiterKey(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::1"), Port: 9}, "2001:db8:1:2::/64"},
	} {
		if got := limiterKey(c.addr); got != c.want {
			t.Errorf("limiterKey(%v) = %q, want %q", c.addr, got, c.want)
		}
	}
	if !isLoopback(&net.TCPAddr{IP: net.ParseIP("127.0.0.1")}) || !isLoopback(&net.TCPAddr{IP: net.IPv6loopback}) {
		t.Error("loopback not recognised")
	}
	if isLoopback(&net.TCPAddr{IP: net.ParseIP("192.0.2.7")}) {
		t.Error("192.0.2.7 taken for loopback")
	}
}

func TestLoginServer(t *testing.T) {
	var gotUser, gotPass string
	check := func(u, p string) error {
		gotUser, gotPass = u, p
		if p != "pw" {
			return errors.New("bad")
		}
		return nil
	}
	// Without an initial response: Username:, Password:.
	l := newLoginServer(check)
	steps := []struct {
		resp      []byte
		challenge string
		done      bool
	}{{nil, "Username:", false}, {[]byte("u"), "Password:", false}, {[]byte("pw"), "", true}}
	for i, s := range steps {
		ch, done, err := l.Next(s.resp)
		if err != nil || string(ch) != s.challenge || done != s.done {
			t.Fatalf("step %d: %q %v %v", i, ch, done, err)
		}
	}
	if gotUser != "u" || gotPass != "pw" {
		t.Fatalf("checked %q/%q", gotUser, gotPass)
	}
	if _, _, err := l.Next([]byte("more")); !errors.Is(err, sasl.ErrUnexpectedClientResponse) {
		t.Fatalf("after done: %v", err)
	}
	// The username as initial response (RFC 4954 section 4).
	l = newLoginServer(check)
	if ch, done, err := l.Next([]byte("v")); err != nil || done || string(ch) != "Password:" {
		t.Fatalf("initial response: %q %v %v", ch, done, err)
	}
	if _, done, err := l.Next([]byte("wrong")); err == nil || !done {
		t.Fatalf("wrong password accepted: %v %v", done, err)
	}
}

func TestRecipientGroups(t *testing.T) {
	msg := []byte("From: alice@example.org\r\nTo: Bob <Bob@Example.org>, carol@example.org\r\nCc: dave@example.org\r\nSubject: s\r\n\r\nbody\r\n")
	rcpts := []string{"bob@example.org", "erin@example.org", "carol@example.org", "dave@example.org", "frank@example.org"}
	got := fmt.Sprint(mailnet.RecipientGroups(msg, rcpts))
	want := "[[bob@example.org carol@example.org dave@example.org] [erin@example.org] [frank@example.org]]"
	if got != want {
		t.Fatalf("groups %s, want %s", got, want)
	}
	// Unparseable headers: everyone blind.
	got = fmt.Sprint(mailnet.RecipientGroups([]byte("To: <<<\r\n\r\n"), rcpts[:2]))
	if got != "[[bob@example.org] [erin@example.org]]" {
		t.Fatalf("groups %s", got)
	}
	// Undisclosed recipients (an empty group).
	got = fmt.Sprint(mailnet.RecipientGroups([]byte("To: undisclosed-recipients:;\r\n\r\nx"), rcpts[:1]))
	if got != "[[bob@example.org]]" {
		t.Fatalf("groups %s", got)
	}
}
