package gateway_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/gateway"
)

// script writes a shell script and returns the command that runs it.
func script(t *testing.T, body string) []string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "filter.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return []string{"/bin/sh", p}
}

// lockedBuffer is a log destination the test reads while servers write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestCommandFilter(t *testing.T) {
	for _, c := range []struct {
		name, body string
		score      float64
		fails      string
	}{
		{"score", `grep -q lottery && echo 7.5 || echo -1`, 7.5, ""},
		{"ham", `cat >/dev/null; echo " -1 extra words"`, -1, ""},
		{"spamc -c", `cat >/dev/null; echo 5.3/5.0`, 5.3, ""},
		{"exit status", `echo 9; echo broken >&2; exit 3`, 0, "broken"},
		{"no number", `echo spam`, 0, "want a score"},
		{"NaN", `echo NaN`, 0, "want a score"},
		{"ignores the message", `echo 2`, 2, ""},
		{"hangs", `exec sleep 60`, 0, "no answer within"},
	} {
		f := &gateway.CommandFilter{Argv: script(t, c.body), Timeout: 300 * time.Millisecond}
		if c.name == "score" {
			f.Timeout = 0 // the default
		}
		// A message larger than a pipe's buffer, so a filter that does
		// not read it does not block the write either.
		msg := []byte("Subject: you won the lottery\r\n\r\n" + strings.Repeat("x", 256<<10) + "\r\n")
		s, err := f.Score(msg)
		switch {
		case c.fails == "" && (err != nil || s != c.score):
			t.Errorf("%s: %v, %v, want %v", c.name, s, err, c.score)
		case c.fails != "" && (err == nil || !strings.Contains(err.Error(), c.fails)):
			t.Errorf("%s: %v, %v, want an error with %q", c.name, s, err, c.fails)
		}
	}
}

// TestCommandFilterAtTheMX: a filter program's score files a message as
// junk; a broken filter is logged and the message still delivered.
func TestCommandFilterAtTheMX(t *testing.T) {
	m, _, _ := startMX(t, func(c *gateway.Config) {
		c.Filter = &gateway.CommandFilter{Argv: script(t, `grep -q -i lottery && echo 9 || echo 0`)}
	})
	if err := send(m.addr, "carol@sender.example", []string{"alice@example.org"}, inMsg); err != nil {
		t.Fatal(err)
	}
	lottery := strings.Replace(strings.Replace(inMsg, "Hello.", "You won the lottery.", 1), "<2@", "<3@", 1)
	if err := send(m.addr, "carol@sender.example", []string{"alice@example.org"}, lottery); err != nil {
		t.Fatal(err)
	}
	inj := m.injected()
	if len(inj) != 2 || bytes.Contains(inj[0].msg, []byte("X-Epost-Junk")) || !bytes.HasPrefix(inj[1].msg, []byte("X-Epost-Junk: yes (score 9.0)\r\n")) {
		t.Fatalf("injected: %q", inj)
	}

	var log lockedBuffer
	broken, _, _ := startMX(t, func(c *gateway.Config) {
		c.Filter = &gateway.CommandFilter{Argv: script(t, `echo oops >&2; exit 1`)}
		c.Log = slog.New(slog.NewTextHandler(&log, nil))
	})
	if err := send(broken.addr, "carol@sender.example", []string{"alice@example.org"}, lottery); err != nil {
		t.Fatalf("with a broken filter: %v", err)
	}
	if inj := broken.injected(); len(inj) != 1 || bytes.Contains(inj[0].msg, []byte("X-Epost-Junk")) {
		t.Fatalf("with a broken filter: %q", inj)
	}
	if !strings.Contains(log.String(), "junk filter failed") || !strings.Contains(log.String(), "oops") {
		t.Fatalf("the broken filter is not logged:\n%s", log.String())
	}
}
