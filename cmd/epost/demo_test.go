package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/demo"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/node"
)

// syncBuffer is a bytes.Buffer that the demo writes from its goroutine
// while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// awaitOutput polls out until re matches, and returns the match.
func awaitOutput(t *testing.T, out *syncBuffer, re *regexp.Regexp, d time.Duration, exited <-chan error) []string {
	t.Helper()
	m, err := pollOutput(out, re, d, exited)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// pollOutput polls out until re matches, and returns the match; it fails
// if the process reports on exited first, or after d.
func pollOutput(out *syncBuffer, re *regexp.Regexp, d time.Duration, exited <-chan error) ([]string, error) {
	deadline := time.Now().Add(d)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m, nil
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("exited (%v) before printing %v:\n%s", err, re, out.String())
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("timed out after %v waiting for %v:\n%s", d, re, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	nodeLineRE = regexp.MustCompile(`(?m)^node \d+ +([0-9a-f]{8})  (/ip4/127\.0\.0\.1/tcp/\d+/p2p/\w+)$`)
	statusRE   = regexp.MustCompile(`(?m)^status page: (http://127\.0\.0\.1:\d+/)$`)
	readyRE    = regexp.MustCompile(`(?m)^ready$`)
)

// TestDemoCommand runs `epost demo --nodes 4` as the command would, with
// a context standing in for Ctrl-C: it must print the nodes and the
// status page, then ready and a view, serve the page, and on the "signal"
// stop every node and return nil (exit status 0).
func TestDemoCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out, errOut syncBuffer
	exited := make(chan error, 1)
	dir := t.TempDir()
	go func() {
		exited <- runDemo(ctx, []string{"--nodes", "4", "--refresh", "100ms", "--dir", dir, "--backup-work-factor", "10"}, &out, &errOut)
	}()
	url := awaitOutput(t, &out, statusRE, 60*time.Second, exited)[1]
	// "ready" comes only after every user sent a message by SMTP and saw
	// one arrive over IMAP.
	awaitOutput(t, &out, readyRE, 120*time.Second, exited)
	// `epost status` reads the same page.
	st, _, err := runCmd(t, cmdStatus, "--url", url)
	if err != nil || !strings.Contains(st, "4 active") || !strings.Contains(st, "mail: 1 users") ||
		!strings.Contains(st, "0 write errors") || !strings.Contains(st, "bytes of 1073741824") {
		t.Fatalf("epost status: %v\n%s", err, st)
	}
	var written struct {
		Users  []struct{ Address, Password, IMAP, SMTP string }
		Status string
	}
	b, err := os.ReadFile(filepath.Join(dir, "demo.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &written); err != nil || len(written.Users) != 4 || written.Status != url {
		t.Fatalf("demo.json: %v %+v", err, written)
	}
	for _, u := range written.Users {
		if !strings.Contains(out.String(), u.Address) || !strings.Contains(out.String(), u.Password) || u.IMAP == "" || u.SMTP == "" {
			t.Fatalf("user %+v not printed", u)
		}
	}
	nodes := nodeLineRE.FindAllStringSubmatch(out.String(), -1)
	if len(nodes) != 4 {
		t.Fatalf("demo printed %d node lines, want 4:\n%s", len(nodes), out.String())
	}
	// After ready, the key backups are sealed and published; their codes
	// open them.
	awaitOutput(t, &out, regexp.MustCompile(`key backups of 4 users sealed and published`), 60*time.Second, exited)
	for _, u := range written.Users {
		ud, err := identity.UserDir(dir, u.Address)
		if err != nil {
			t.Fatal(err)
		}
		code, err := os.ReadFile(filepath.Join(ud, demo.RecoveryCodeFile))
		if err != nil {
			t.Fatal(err)
		}
		backup, err := os.ReadFile(filepath.Join(ud, identity.UserBackupFile))
		if err != nil {
			t.Fatal(err)
		}
		if keys, err := identity.OpenBackup(backup, strings.TrimSpace(string(code))); err != nil || keys.Address != u.Address {
			t.Fatalf("the backup of %s does not open with its code: %v", u.Address, err)
		}
	}
	// The view follows ready and is refreshed: wait for a second one.
	awaitOutput(t, &out, regexp.MustCompile(`(?s)4 active, ready.*4 active, ready`), 30*time.Second, exited)

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url + "status.json")
	if err != nil {
		t.Fatal(err)
	}
	var rep node.StatusReport
	err = json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Nodes) != 4 {
		t.Fatalf("status.json lists %d nodes", len(rep.Nodes))
	}
	printed := map[string]string{}
	for _, m := range nodes {
		printed[m[1]] = m[2]
	}
	for _, s := range rep.Nodes {
		if printed[s.Short] != s.Addr {
			t.Errorf("node %s: status.json address %q, printed %q", s.Short, s.Addr, printed[s.Short])
		}
		if !s.Active || s.LeafSet != 3 {
			t.Errorf("node %s: active %v, leaf set %d, want 3", s.Short, s.Active, s.LeafSet)
		}
	}
	resp, err = client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Contains(page, []byte("<svg")) {
		t.Fatalf("status page: %v\n%s", err, page)
	}

	cancel() // Ctrl-C
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("demo returned %v after the signal, want nil (exit status 0)", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("demo did not stop within 60 s of the signal")
	}
	if !strings.HasSuffix(out.String(), "stopping every node\nstopped\n") {
		t.Errorf("demo output does not end with stopped:\n%s", out.String())
	}
	if errOut.String() != "" {
		t.Errorf("demo wrote to stderr at the default log level:\n%s", errOut.String())
	}
	if resp, err := client.Get(url); err == nil {
		resp.Body.Close()
		t.Error("the status page still answers after the demo stopped")
	}
}

// TestDemoFlags: bad flags are usage errors, before anything starts, and
// `epost help demo` documents the flags on stdout.
func TestDemoFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--nodes", "0"},
		{"--nodes", "101"},
		{"--refresh", "0s"},
		{"--log", "loud"},
		{"extra"},
		{"--nodes", "many"},
	} {
		var out, errOut bytes.Buffer
		if err := runDemo(t.Context(), args, &out, &errOut); !errors.Is(err, errUsage) {
			t.Errorf("demo %v: %v, want a usage error", args, err)
		}
		if strings.Contains(out.String(), "starting") {
			t.Errorf("demo %v started nodes:\n%s", args, out.String())
		}
	}
	var out, errOut bytes.Buffer
	if err := run([]string{"help", "demo"}, &out, &errOut); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("help demo: %v", err)
	}
	for _, want := range []string{"usage: epost demo", "-nodes", "-http", "-refresh", "Ctrl-C"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help demo lacks %q:\n%s", want, out.String())
		}
	}
}
