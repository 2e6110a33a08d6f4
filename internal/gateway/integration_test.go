package gateway_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"net/smtp"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/gateway"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/node"
	"github.com/epost-mail/epost/internal/post"
	"github.com/epost-mail/epost/internal/smtpd"
)

// The gateway's outbound side is what the submission server hands
// outside mail to.
var _ smtpd.Outbound = (*gateway.Outbound)(nil)

const (
	gwUser = "gateway@example.org"
	alice  = "alice@example.org"
	bob    = "bob@example.org"
)

// waitUntil polls cond: the nodes run on real time, and this is how the
// test observes them (not a sleep to let something happen).
func waitUntil(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// community is three real nodes on loopback: the gateway user on
// nodes[0], alice on nodes[1], bob on nodes[2]; every node lists the
// gateway user in post.Config.Gateways.
type community struct {
	nodes []*node.Node
}

func startCommunity(t testing.TB) *community {
	ca, err := identity.NewCA(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := &community{}
	for i := range 3 {
		key, err := identity.GenerateNodeKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.IssueNode(rand.Reader, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		cfg := node.DefaultConfig()
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.Key, cfg.Cert, cfg.CA = key, cert, ca.Public()
		cfg.Overlay.MinTimeout = env.Second // several nodes share this process
		cfg.DataDir = filepath.Join(dir, fmt.Sprintf("node%d", i))
		cfg.Log = env.Discard
		cfg.Post = post.DefaultConfig()
		cfg.Post.PollPeriod = 2 * env.Second // a lost push costs seconds, not minutes
		cfg.Post.Gateways = []string{gwUser}
		if i > 0 {
			cfg.Bootstrap = []env.Addr{c.nodes[0].Addr()}
		}
		n, err := node.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
	}
	waitUntil(t, "ring settled", 60*time.Second, func() bool {
		for _, n := range c.nodes {
			ok := false
			if err := n.Do(func() { ok = n.Overlay().Active() && n.Overlay().Leaf().Len() == len(c.nodes)-1 }); err != nil || !ok {
				return false
			}
		}
		return true
	})
	for i, addr := range []string{gwUser, alice, bob} {
		n := c.nodes[i]
		keys, cert, err := ca.NewUser(rand.Reader, addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.AddUser(keys, cert, 90*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// The recipients' certificates are found from the gateway's node.
	gw := c.nodes[0]
	for _, addr := range []string{alice, bob} {
		waitUntil(t, addr+" published", 60*time.Second, func() bool {
			found := make(chan bool, 1)
			if err := gw.Do(func() { gw.Mail().LookupUser(addr, func(ok bool, _ error) { found <- ok }) }); err != nil {
				return false
			}
			select {
			case ok := <-found:
				return ok
			case <-time.After(30 * time.Second):
				return false
			}
		})
	}
	return c
}

// inbox returns the messages in addr's INBOX on n.
func inbox(t testing.TB, n *node.Node, addr string) []*post.Message {
	return folder(t, n, addr, "INBOX")
}

// folder returns the messages in one of addr's folders on n.
func folder(t testing.TB, n *node.Node, addr, name string) []*post.Message {
	var out []*post.Message
	if err := n.Do(func() {
		if a := n.Mail().User(addr); a != nil {
			if f, ok := a.Folder(name); ok {
				out = f.Messages()
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func fetch(t testing.TB, n *node.Node, addr string, uid uint32) []byte {
	t.Helper()
	return fetchFrom(t, n, addr, "INBOX", uid)
}

func fetchFrom(t testing.TB, n *node.Node, addr, name string, uid uint32) []byte {
	t.Helper()
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	if err := n.Do(func() {
		f, _ := n.Mail().User(addr).Folder(name)
		f.Fetch(uid, func(b []byte, err error) { ch <- res{b, err} })
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("fetch %s UID %d: %v", addr, uid, r.err)
		}
		return r.b
	case <-time.After(60 * time.Second):
		t.Fatalf("fetch %s UID %d: no answer", addr, uid)
	}
	return nil
}

func postStats(t testing.TB, n *node.Node) post.Stats {
	var s post.Stats
	if err := n.Do(func() { s = n.Mail().Stats() }); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestGatewayEndToEnd: an Internet MTA (Go's net/smtp) delivers to the
// gateway node's MX; the message reaches the member's INBOX on another
// node exactly once, with the gateway's Authentication-Results and
// without $Phishing though its From is outside the community; unknown
// members and relaying are refused; a message failing DKIM and SPF
// arrives marked as junk, in the recipient's Junk folder.
func TestGatewayEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a community of real nodes")
	}
	c := startCommunity(t)
	dns := newFakeDNS()
	dns.setTXT("sender.example", "v=spf1 ip4:127.0.0.1 -all")
	dns.setTXT("_dmarc.sender.example", "v=DMARC1; p=reject")
	dns.setTXT("spoofed.example", "v=spf1 ip4:192.0.2.1 -all")
	dns.setTXT("_dmarc.spoofed.example", "v=DMARC1; p=reject")
	k := newDKIMKey(t, dns, "sender.example")
	ks := newDKIMKey(t, dns, "spoofed.example")

	gwNode := c.nodes[0]
	srv := gateway.New(gateway.Config{
		Loop: gwNode, Mail: gwNode.Mail, Gateway: gwUser, Domains: []string{"example.org"},
		Hostname: "mx.example.org", Resolver: dns, Log: env.Discard,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	addr := ln.Addr().String()

	msg := k.sign(t, "From: Carol <carol@sender.example>\r\nTo: alice@example.org\r\nSubject: from the Internet\r\n"+
		"Message-ID: <e2e-1@sender.example>\r\n\r\nHello Alice, from outside.\r\n")
	for i := range 2 { // the second time: an MTA retrying after a lost 250
		if err := smtp.SendMail(addr, nil, "carol@sender.example", []string{alice}, []byte(msg)); err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
	}
	if err := smtp.SendMail(addr, nil, "carol@sender.example", []string{"nobody@example.org"}, []byte(msg)); code(err) != "550" {
		t.Errorf("unknown member: %v, want 550", err)
	}
	if err := smtp.SendMail(addr, nil, "carol@sender.example", []string{"victim@elsewhere.example"}, []byte(msg)); code(err) != "550" {
		t.Errorf("relay attempt: %v, want 550", err)
	}
	junk := strings.Replace(ks.sign(t, "From: Mallory <ceo@spoofed.example>\r\nTo: bob@example.org\r\nSubject: urgent\r\n\r\nPay this.\r\n"),
		"Pay this.", "Pay that.", 1)
	if err := smtp.SendMail(addr, nil, "ceo@spoofed.example", []string{bob}, []byte(junk)); err != nil {
		t.Fatalf("junk delivery: %v", err)
	}
	if st := srv.Stats(); st.Accepted != 3 || st.Junk != 1 || st.Refused != 2 {
		t.Errorf("gateway stats %+v: want 3 accepted, 1 junk, 2 refused", st)
	}

	aliceNode, bobNode := c.nodes[1], c.nodes[2]
	waitUntil(t, "both copies processed at alice's node", 90*time.Second, func() bool {
		s := postStats(t, aliceNode)
		return s.Delivered >= 1 && s.Duplicates >= 1
	})
	msgs := inbox(t, aliceNode, alice)
	if len(msgs) != 1 {
		t.Fatalf("alice's INBOX has %d messages, want 1", len(msgs))
	}
	if slices.Contains(msgs[0].Flags, post.FlagSenderMismatch) {
		t.Errorf("gateway mail flagged %v", msgs[0].Flags)
	}
	got := fetch(t, aliceNode, alice, msgs[0].UID)
	wantAR := "Authentication-Results: mx.example.org;\r\n\tspf=pass smtp.mailfrom=sender.example;\r\n\t" +
		"dkim=pass header.d=sender.example;\r\n\tdmarc=pass header.from=sender.example\r\n"
	if !bytes.HasPrefix(got, []byte(wantAR)) || !bytes.HasSuffix(got, []byte(msg)) {
		t.Errorf("alice got\n%s", got)
	}
	if bytes.Contains(got, []byte(gateway.HeaderJunk)) {
		t.Errorf("a clean message was marked as junk")
	}

	// POST files what the gateway marked as junk in the recipient's Junk.
	waitUntil(t, "the junk in bob's Junk folder", 90*time.Second, func() bool { return len(folder(t, bobNode, bob, "Junk")) >= 1 })
	if n := len(inbox(t, bobNode, bob)); n != 0 {
		t.Errorf("bob's INBOX has %d messages, want 0", n)
	}
	msgs = folder(t, bobNode, bob, "Junk")
	got = fetchFrom(t, bobNode, bob, "Junk", msgs[0].UID)
	if !bytes.HasPrefix(got, []byte("X-Epost-Junk: yes (score ")) ||
		!bytes.Contains(got, []byte("dkim=fail")) || !bytes.Contains(got, []byte("dmarc=fail")) {
		t.Errorf("bob got\n%s", got)
	}
}
