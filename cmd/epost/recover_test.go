package main

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/node"
	"github.com/epost-mail/epost/internal/post"
)

// startNode runs the node called name from dir's files on loopback.
func startNode(t *testing.T, dir, name string, boot env.Addr) *node.Node {
	t.Helper()
	caPub, err := identity.ReadCAPublic(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, cert, err := identity.ReadNode(dir, name, identity.NewVerifier(caPub))
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Key, cfg.Cert, cfg.CA = key, cert, caPub
	cfg.Overlay.MinTimeout = env.Second // many nodes share this process
	cfg.DataDir = filepath.Join(t.TempDir(), name)
	cfg.Log = env.Discard
	if boot != "" {
		cfg.Bootstrap = []env.Addr{boot}
	}
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRecoverFromTheNetwork: a user's node publishes the key backup and
// is lost; `epost user recover` joins the community as another node and
// gets the keys back with the address and the code alone.
func TestRecoverFromTheNetwork(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := runCmd(t, cmdCA, "init", "--dir", dir); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n0", "n1", "n2", "rescue"} {
		if _, _, err := runCmd(t, cmdCA, "issue-node", "--dir", dir, "--name", n); err != nil {
			t.Fatal(err)
		}
	}
	n0 := startNode(t, dir, "n0", "")
	n1 := startNode(t, dir, "n1", n0.Addr())
	n2 := startNode(t, dir, "n2", n0.Addr())
	waitUntil(t, "ring", 60*time.Second, func() bool { return n0.Active() && n1.Active() && n2.Active() })

	ca, err := identity.ReadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	src := &seqReader{}
	keys, err := identity.GenerateUserKeys(src, "alice@example.org")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueUser(src, keys.Address, keys.Signing.Public(), keys.Sealing.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	code, err := identity.NewRecoveryCode(src)
	if err != nil {
		t.Fatal(err)
	}
	backup, err := identity.SealBackup(keys, code, 10)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan error, 1)
	var acct *post.Account
	if err := n1.Do(func() { acct, err = n1.Mail().AddUser(keys, cert, func(e error) { ready <- e }) }); err != nil || acct == nil {
		t.Fatal(err)
	}
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	published := make(chan error, 1)
	if err := n1.Do(func() { acct.PublishKeyBackup(backup, func(e error) { published <- e }) }); err != nil {
		t.Fatal(err)
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	n1.Close() // the user's node is lost

	out, _, err := runCmd(t, cmdUser, "recover", "--dir", dir, "--node", "rescue", "--bootstrap", string(n0.Addr()),
		"--listen", "/ip4/127.0.0.1/tcp/0", "--timeout", "90s", "--code", code, "alice@example.org")
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, out)
	}
	got, err := identity.ReadUserKeys(dir, "alice@example.org")
	if err != nil || !got.Equal(keys) {
		t.Fatalf("recovered keys differ: %v", err)
	}
}

// seqReader is a deterministic byte source.
type seqReader struct{ n byte }

func (s *seqReader) Read(p []byte) (int, error) {
	for i := range p {
		s.n++
		p[i] = s.n*31 + 7
	}
	return len(p), nil
}
