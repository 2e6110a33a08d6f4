package smtpd

import (
	"bufio"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FuzzSMTPCommands feeds arbitrary command streams to a server (with a
// fake POST) and checks that it answers every one with well-formed
// replies and that nothing reaches POST without a successful AUTH, nor
// from anyone but the authenticated user.
func FuzzSMTPCommands(f *testing.F) {
	plain := func(user, pw string) string {
		return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pw))
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, seed := range []string{
		"EHLO x\r\nAUTH PLAIN " + plain(alice, "alice-pw") + "\r\nMAIL FROM:<" + alice + ">\r\nRCPT TO:<" + bob + ">\r\nDATA\r\nSubject: s\r\n\r\nbody\r\n.\r\n",
		"EHLO x\r\nAUTH LOGIN\r\n" + b64(bob) + "\r\n" + b64("bob-pw") + "\r\nMAIL FROM:<" + bob + "> BODY=8BITMIME SIZE=10\r\nRCPT TO:<" + alice + ">\r\nBDAT 5 LAST\r\nhello",
		"EHLO x\r\nMAIL FROM:<" + alice + ">\r\nRCPT TO:<victim@elsewhere.example>\r\nDATA\r\nx\r\n.\r\n",
		"HELO x\r\nAUTH PLAIN " + plain(alice, "wrong") + "\r\nAUTH PLAIN\r\n*\r\nRSET\r\nNOOP\r\nVRFY bob\r\n",
		"EHLO x\r\nAUTH PLAIN " + plain(alice, "alice-pw") + "\r\nMAIL FROM:<" + bob + ">\r\nMAIL FROM:<> SMTPUTF8\r\nRCPT TO:<jos\u00e9@example.org>\r\nDATA\r\n",
		"\r\n\x00\xff garbage \r\nEHLO\r\nMAIL\r\nRCPT TO:\r\nDATA extra\r\nBDAT x\r\nSTARTTLS\r\n",
	} {
		f.Add([]byte(seed))
	}
	auth := &recordingAuth{fakeAuth: fakeAuth{alice: "alice-pw", bob: "bob-pw"}}
	loop := &fakeLoop{}
	mail := &fakeMailer{loop: loop, members: map[string]bool{alice: true, bob: true}, auto: true}
	srv := newServer(Config{
		Loop: loop, Auth: auth, Domains: []string{"example.org"},
		MaxMessageBytes: 4096, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
		AuthLimit: AuthLimit{Free: 1 << 30}, SendLimit: SendLimit{PerMinute: 1e9, Burst: 1e9},
		MaxConnections: 1 << 20, MaxConnectionsPerIP: 1 << 20,
	}, func() mailer { return mail })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	f.Fuzz(func(t *testing.T, in []byte) {
		mail.mu.Lock()
		mail.sends = nil
		mail.mu.Unlock()
		auth.reset()
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			conn.Write(in)
			conn.Write([]byte("\r\nQUIT\r\n"))
			conn.(*net.TCPConn).CloseWrite()
		}()
		r := bufio.NewReader(conn)
		for {
			line, err := r.ReadString('\n')
			if err == io.EOF && line == "" {
				break
			}
			if errors.Is(err, syscall.ECONNRESET) {
				// The server hung up (too many errors) with our commands
				// still unread, so its kernel reset the connection.
				break
			}
			if err != nil {
				t.Fatalf("reading replies: %v (after %q)", err, line)
			}
			if len(line) < 5 || line[0] < '2' || line[0] > '5' || !strings.HasSuffix(line, "\r\n") ||
				(line[3] != ' ' && line[3] != '-') {
				t.Fatalf("malformed reply line %q", line)
			}
		}
		authed := auth.succeeded()
		for _, s := range mail.sent() {
			if len(authed) != 1 || authed[0] != s.from {
				t.Fatalf("POST got mail from %s; logged in: %v", s.from, authed)
			}
			for _, rc := range s.rcpts {
				if rc != alice && rc != bob {
					t.Fatalf("POST got a recipient %q who is not a member", rc)
				}
			}
		}
	})
}

// recordingAuth remembers who logged in.
type recordingAuth struct {
	fakeAuth
	mu sync.Mutex
	ok []string
}

func (a *recordingAuth) Check(username, password string) (string, bool) {
	addr, ok := a.fakeAuth.Check(username, password)
	if ok {
		a.mu.Lock()
		a.ok = append(a.ok, addr)
		a.mu.Unlock()
	}
	return addr, ok
}

func (a *recordingAuth) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ok = nil
}

func (a *recordingAuth) succeeded() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.ok...)
}
