package imapd_test

// These tests run the IMAP server over real POST: three real nodes on
// loopback (internal/node, a higher layer, imported by tests only: the
// layer check in internal/deptest reads non-test files) with on-disk
// stores, and real clients: go-imap's imapclient and Python's imaplib.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/imapd"
	"github.com/epost-mail/epost/internal/node"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/post"
	"github.com/epost-mail/epost/internal/store"
	"github.com/epost-mail/epost/internal/transport"
)

// seqReader is a deterministic byte source.
type seqReader struct{ n uint64 }

func (s *seqReader) Read(p []byte) (int, error) {
	for i := range p {
		s.n++
		p[i] = byte(s.n*0x9e3779b97f4a7c15>>56) ^ byte(s.n)
	}
	return len(p), nil
}

// runs numbers the tests' runs (go test -count), so that folder names and
// messages are new each time in the shared community: POST keeps one copy
// of a message sent twice.
var runs atomic.Int64

func unique(name string) string { return fmt.Sprintf("%s%d", name, runs.Add(1)) }

// passwords is the tests' Auth.
type passwords map[string]string

func (p passwords) Check(user, pass string) (string, bool) {
	want, ok := p[user]
	return user, ok && want == pass
}

// waitFor polls cond until it holds: tests synchronise on conditions,
// never on sleeps.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// community is three real nodes with alice served on node 0 (with IMAP)
// and bob on node 1.
type community struct {
	nodes []*node.Node
	cfgs  []node.Config
	users map[string]userKeys
	srv   *imapd.Server
	addr  string // alice's IMAP server
	dir   string
	// faults fails node 0's disk writes on demand; its POST runs with
	// quota as each user's quota.
	faults *store.Faults
	// links cut a node's links to others on demand (nodes[i]'s in
	// links[i]).
	links []*transport.Faults

	panics panicLog // what the server logged about panics
}

// panicLog is a slog handler that keeps records mentioning a panic.
type panicLog struct {
	mu   sync.Mutex
	seen []string
}

func (h *panicLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *panicLog) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") {
		h.mu.Lock()
		h.seen = append(h.seen, r.Message)
		h.mu.Unlock()
	}
	return nil
}
func (h *panicLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *panicLog) WithGroup(string) slog.Handler      { return h }

func (h *panicLog) all() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.seen)
}

var (
	shared     *community
	sharedErr  error
	sharedOnce sync.Once
)

const (
	alice = "alice@example.org"
	bob   = "bob@example.org"
	// quota is alice's: far above what the tests store, except where one
	// goes over it on purpose.
	quota = 2 << 20
)

// startCommunity starts (once per test binary) the community the tests
// share; each test uses its own folders or checks relative counts.
func startCommunity(t testing.TB) *community {
	t.Helper()
	if testing.Short() {
		t.Skip("starts three real nodes")
	}
	sharedOnce.Do(func() {
		var c *community
		c, sharedErr = newCommunity(t)
		if sharedErr == nil {
			shared = c
		} else if c != nil {
			c.close()
		}
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

// TestMain stops the shared community once every test has run (a
// test's Cleanup would stop it under the tests that follow).
func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.close()
	}
	os.Exit(code)
}

func (c *community) close() {
	if c.srv != nil {
		c.srv.Close()
	}
	for _, n := range c.nodes {
		n.Close()
	}
	os.RemoveAll(c.dir)
}

func newCommunity(t testing.TB) (*community, error) { return newCommunityWith(t, nil) }

// newCommunityWith is newCommunity with edit applied to every node's
// configuration.
func newCommunityWith(t testing.TB, edit func(*node.Config)) (*community, error) {
	src := &seqReader{}
	ca, err := identity.NewCA(src)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "imapd-test-")
	if err != nil {
		return nil, err
	}
	c := &community{dir: dir, faults: &store.Faults{}}
	for i := range 3 {
		key, err := identity.GenerateNodeKey(src)
		if err != nil {
			return c, err
		}
		cert, err := ca.IssueNode(src, key.Public())
		if err != nil {
			return c, err
		}
		cfg := node.DefaultConfig()
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.Key, cfg.Cert, cfg.CA = key, cert, ca.Public()
		cfg.Overlay.MinTimeout = env.Second // many nodes share this process
		cfg.DataDir = filepath.Join(dir, fmt.Sprintf("node%d", i))
		cfg.Log = env.Discard
		if i > 0 {
			cfg.Bootstrap = []env.Addr{c.nodes[0].Addr()}
		} else {
			cfg.Store = store.DefaultConfig()
			cfg.Store.Faults = c.faults
			cfg.Post = post.DefaultConfig()
			cfg.Post.Quota = quota
		}
		cfg.Faults = &transport.Faults{}
		c.links = append(c.links, cfg.Faults)
		if edit != nil {
			edit(&cfg)
		}
		n, err := node.New(cfg)
		if err != nil {
			return c, err
		}
		if err := n.Start(); err != nil {
			return c, err
		}
		c.cfgs = append(c.cfgs, cfg)
		c.nodes = append(c.nodes, n)
	}
	deadline := time.Now().Add(90 * time.Second)
	for !c.settled() {
		if time.Now().After(deadline) {
			return c, errors.New("ring did not settle")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.users = map[string]userKeys{}
	for i, addr := range []string{alice, bob} {
		keys, err := identity.GenerateUserKeys(src, addr)
		if err != nil {
			return c, err
		}
		cert, err := ca.IssueUser(src, keys.Address, keys.Signing.Public(), keys.Sealing.Recipient())
		if err != nil {
			return c, err
		}
		c.users[addr] = userKeys{keys, cert}
		if err := c.addUser(i, addr); err != nil {
			return c, err
		}
	}
	return c, c.startServer()
}

type userKeys struct {
	keys identity.UserKeys
	cert *identity.UserCert
}

// addUser has node i serve addr, and waits until the mailbox is loaded.
func (c *community) addUser(i int, addr string) error {
	u := c.users[addr]
	return c.nodes[i].AddUser(u.keys, u.cert, 90*time.Second)
}

// startServer serves alice's IMAP on node 0.
func (c *community) startServer() error {
	srv := imapd.New(imapd.Config{
		Loop:         c.nodes[0],
		Mail:         c.nodes[0].Mail,
		Auth:         passwords{alice: "alice-pw"},
		InsecureAuth: true,
		Log:          slog.New(&c.panics),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	c.srv = srv
	go srv.Serve(ln)
	c.addr = ln.Addr().String()
	return nil
}

// restart stops node 0 and its IMAP server and starts them again on the
// same disk.
func (c *community) restart(t *testing.T) {
	t.Helper()
	c.srv.Close()
	if err := c.nodes[0].Close(); err != nil {
		t.Fatal(err)
	}
	cfg := c.cfgs[0]
	cfg.Bootstrap = []env.Addr{c.nodes[1].Addr(), c.nodes[2].Addr()}
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	c.nodes[0] = n
	waitFor(t, "ring after restart", 90*time.Second, c.settled)
	if err := c.addUser(0, alice); err != nil {
		t.Fatal(err)
	}
	if err := c.startServer(); err != nil {
		t.Fatal(err)
	}
}

func (c *community) settled() bool {
	for _, n := range c.nodes {
		ok := false
		if err := n.Do(func() { ok = n.Overlay().Active() && n.Overlay().Leaf().Len() == len(c.nodes)-1 }); err != nil || !ok {
			return false
		}
	}
	return true
}

// send delivers msg from bob (on node 1) to alice through POST.
func (c *community) send(t *testing.T, msg []byte) {
	t.Helper()
	n := c.nodes[1]
	done := make(chan error, 1)
	if err := n.Do(func() { n.Mail().Send(bob, []string{alice}, msg, func(err error) { done <- err }) }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("send: %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("send did not finish")
	}
}

func dial(t *testing.T, c *community, opts *imapclient.Options) *imapclient.Client {
	t.Helper()
	cl, err := imapclient.DialInsecure(c.addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	if err := cl.Login(alice, "alice-pw").Wait(); err != nil {
		t.Fatalf("login: %v", err)
	}
	return cl
}

func appendMsg(t *testing.T, cl *imapclient.Client, mailbox string, msg []byte, flags ...imap.Flag) *imap.AppendData {
	t.Helper()
	cmd := cl.Append(mailbox, int64(len(msg)), &imap.AppendOptions{Flags: flags, Time: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)})
	if _, err := cmd.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := cmd.Wait()
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return data
}

func testMessage(subject, body string) []byte {
	return []byte("From: Bob <" + bob + ">\r\nTo: Alice <" + alice + ">\r\nSubject: " + subject +
		"\r\nDate: Wed, 04 Mar 2026 05:06:07 +0000\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@example.org>\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n")
}

func TestLogin(t *testing.T) {
	c := startCommunity(t)
	cl, err := imapclient.DialInsecure(c.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Login(alice, "wrong").Wait(); err == nil {
		t.Fatal("login with a wrong password succeeded")
	}
	if err := cl.Login(alice, "alice-pw").Wait(); err != nil {
		t.Fatal(err)
	}
	// AUTHENTICATE PLAIN (RFC 4616), on a second connection.
	cl2, err := imapclient.DialInsecure(c.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	if err := cl2.Authenticate(sasl.NewPlainClient("", alice, "wrong")); err == nil {
		t.Error("AUTHENTICATE PLAIN with a wrong password succeeded")
	}
	if err := cl2.Authenticate(sasl.NewPlainClient("", alice, "alice-pw")); err != nil {
		t.Errorf("AUTHENTICATE PLAIN: %v", err)
	}
	if _, err := cl2.Select("INBOX", nil).Wait(); err != nil {
		t.Errorf("SELECT after AUTHENTICATE: %v", err)
	}
	caps := cl.Caps()
	for _, want := range []imap.Cap{imap.CapIMAP4rev1, imap.CapIMAP4rev2, imap.CapIdle, imap.CapUIDPlus, imap.CapMove, imap.CapSpecialUse, imap.CapNamespace} {
		if !caps.Has(want) {
			t.Errorf("capability %s missing from %v", want, caps)
		}
	}
	ns, err := cl.Namespace().Wait()
	if err != nil || len(ns.Personal) != 1 || ns.Personal[0].Delim != '/' {
		t.Errorf("namespace: %+v, %v", ns, err)
	}
}

func TestListSpecialUseAndStatus(t *testing.T) {
	c := startCommunity(t)
	cl := dial(t, c, nil)
	list, err := cl.List("", "*", nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	attrs := map[string][]imap.MailboxAttr{}
	for _, d := range list {
		attrs[d.Mailbox] = d.Attrs
	}
	for name, want := range map[string]imap.MailboxAttr{"Sent": imap.MailboxAttrSent, "Drafts": imap.MailboxAttrDrafts,
		"Trash": imap.MailboxAttrTrash, "Junk": imap.MailboxAttrJunk, "Archive": imap.MailboxAttrArchive} {
		if !slices.Contains(attrs[name], want) {
			t.Errorf("LIST: %s has %v, want %s", name, attrs[name], want)
		}
	}
	for _, name := range post.DefaultFolders {
		if _, ok := attrs[name]; !ok {
			t.Errorf("LIST lacks %s: %v", name, list)
		}
	}
	special, err := cl.List("", "*", &imap.ListOptions{SelectSpecialUse: true}).Collect()
	if err != nil || len(special) != 5 {
		t.Errorf("LIST (SPECIAL-USE): %d mailboxes, %v", len(special), err)
	}
	st, err := cl.Status("Drafts", &imap.StatusOptions{NumMessages: true, UIDNext: true, UIDValidity: true, NumUnseen: true}).Wait()
	if err != nil || st.NumMessages == nil || st.UIDValidity == 0 || st.UIDNext == 0 {
		t.Fatalf("STATUS: %+v, %v", st, err)
	}
	if _, err := cl.Status("Nope", &imap.StatusOptions{NumMessages: true}).Wait(); err == nil {
		t.Error("STATUS of a missing mailbox succeeded")
	}
}

// lsub logs alice in on a raw connection and returns the mailboxes LSUB
// "" * lists (RFC 3501 section 6.3.9).
func lsub(t *testing.T, c *community) []string {
	t.Helper()
	r := dialRaw(t, c.addr)
	if l := r.cmd("l", "l LOGIN "+alice+" alice-pw"); !strings.HasPrefix(l, "l OK") {
		t.Fatalf("LOGIN: %q", l)
	}
	lines, done := r.collect("s", `s LSUB "" *`)
	if !strings.HasPrefix(done, "s OK") {
		t.Fatalf("LSUB: %q", done)
	}
	var out []string
	for _, l := range lines {
		if i := strings.LastIndex(l, `"/" `); strings.HasPrefix(l, "* LSUB ") && i >= 0 {
			out = append(out, strings.Trim(l[i+4:], `"`))
		}
	}
	return out
}

// TestSubscriptions: a new folder is subscribed; UNSUBSCRIBE takes it out
// of LSUB and LIST (SUBSCRIBED), and SUBSCRIBE puts it back; a folder
// that does not exist cannot be subscribed.
func TestSubscriptions(t *testing.T) {
	c := startCommunity(t)
	cl := dial(t, c, nil)
	name := unique("Sub")
	if err := cl.Create(name, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if got := lsub(t, c); !slices.Contains(got, name) || !slices.Contains(got, "INBOX") {
		t.Fatalf("LSUB after CREATE: %v, want %s and INBOX", got, name)
	}
	if err := cl.Unsubscribe(name).Wait(); err != nil {
		t.Fatal(err)
	}
	if got := lsub(t, c); slices.Contains(got, name) || !slices.Contains(got, "INBOX") {
		t.Fatalf("LSUB after UNSUBSCRIBE: %v", got)
	}
	subscribed, err := cl.List("", "*", &imap.ListOptions{SelectSubscribed: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range subscribed {
		if d.Mailbox == name {
			t.Fatalf("LIST (SUBSCRIBED) lists the unsubscribed %s", name)
		}
	}
	ret, err := cl.List("", name, &imap.ListOptions{ReturnSubscribed: true}).Collect()
	if err != nil || len(ret) != 1 || slices.Contains(ret[0].Attrs, imap.MailboxAttrSubscribed) {
		t.Fatalf("LIST RETURN (SUBSCRIBED) of the unsubscribed folder: %+v, %v", ret, err)
	}
	if err := cl.Subscribe(name).Wait(); err != nil {
		t.Fatal(err)
	}
	if got := lsub(t, c); !slices.Contains(got, name) {
		t.Fatalf("LSUB after SUBSCRIBE: %v", got)
	}
	if err := cl.Subscribe(unique("Nope")).Wait(); err == nil {
		t.Error("SUBSCRIBE to a missing folder succeeded")
	}
}

func TestFolders(t *testing.T) {
	c := startCommunity(t)
	cl := dial(t, c, nil)
	top := unique("Projects")
	if err := cl.Create(top+"/epost", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := cl.Create(top+"/epost", nil).Wait(); err == nil {
		t.Error("second CREATE succeeded")
	}
	appendMsg(t, cl, top+"/epost", testMessage("kept across rename", "x"))
	if err := cl.Rename(top+"/epost", top+"/done", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	list, err := cl.List(top+"/", "%", nil).Collect()
	if err != nil || len(list) != 1 || list[0].Mailbox != top+"/done" {
		t.Fatalf("LIST after RENAME: %+v, %v", list, err)
	}
	// CREATE made the parent too; renaming it takes the children along.
	parent, err := cl.List("", top, nil).Collect()
	if err != nil || len(parent) != 1 || !slices.Contains(parent[0].Attrs, imap.MailboxAttrHasChildren) {
		t.Fatalf("LIST of the parent: %+v, %v", parent, err)
	}
	if err := cl.Rename(top, top+"x", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	top += "x"
	st, err := cl.Status(top+"/done", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 1 {
		t.Fatalf("renamed folder lost its message: %+v %v", st, err)
	}
	if err := cl.Delete(top + "/done").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := cl.Delete("INBOX").Wait(); err == nil {
		t.Error("DELETE INBOX succeeded")
	}
	if _, err := cl.Select(top+"/done", nil).Wait(); err == nil {
		t.Error("SELECT of a deleted folder succeeded")
	}
}

func TestMessages(t *testing.T) {
	c := startCommunity(t)
	cl := dial(t, c, nil)
	work, work2 := unique("Work"), unique("Work")
	if err := cl.Create(work, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := cl.Select(work, nil).Wait()
	if err != nil || sel.NumMessages != 0 {
		t.Fatalf("SELECT: %+v, %v", sel, err)
	}
	msg1 := testMessage("hello imap", "first body word")
	msg2 := testMessage("second", "another text")
	a1 := appendMsg(t, cl, work, msg1, imap.FlagFlagged)
	a2 := appendMsg(t, cl, work, msg2)
	if a1.UID != 1 || a2.UID != 2 || a1.UIDValidity != sel.UIDValidity {
		t.Fatalf("APPENDUID: %+v %+v (UIDVALIDITY %d)", a1, a2, sel.UIDValidity)
	}
	if err := cl.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if n := cl.Mailbox().NumMessages; n != 2 {
		t.Fatalf("EXISTS after APPEND: %d", n)
	}

	// FETCH: metadata from the log, the rest from the bytes.
	partial := &imap.FetchItemBodySection{Peek: true, Partial: &imap.SectionPartial{Offset: 6, Size: 3}}
	full := &imap.FetchItemBodySection{Peek: true}
	subject := &imap.FetchItemBodySection{Peek: true, Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}}
	msgs, err := cl.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true, Flags: true, InternalDate: true, RFC822Size: true,
		Envelope: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true}, BodySection: []*imap.FetchItemBodySection{full, partial, subject}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH: %v, %v", msgs, err)
	}
	m := msgs[0]
	if m.UID != 1 || !slices.Equal(m.Flags, []imap.Flag{imap.FlagFlagged}) || m.RFC822Size != int64(len(msg1)) ||
		!m.InternalDate.Equal(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)) {
		t.Errorf("FETCH metadata: uid %d flags %v size %d date %v", m.UID, m.Flags, m.RFC822Size, m.InternalDate)
	}
	if m.Envelope == nil || m.Envelope.Subject != "hello imap" || len(m.Envelope.From) != 1 || m.Envelope.From[0].Addr() != bob {
		t.Errorf("ENVELOPE: %+v", m.Envelope)
	}
	if bs, ok := m.BodyStructure.(*imap.BodyStructureSinglePart); !ok || bs.Type != "text" || bs.Subtype != "plain" {
		t.Errorf("BODYSTRUCTURE: %#v", m.BodyStructure)
	}
	if got := m.FindBodySection(full); !bytes.Equal(got, msg1) {
		t.Errorf("BODY.PEEK[] = %q, want %q", got, msg1)
	}
	if got := m.FindBodySection(partial); string(got) != string(msg1[6:9]) {
		t.Errorf("BODY.PEEK[]<6.3> = %q", got)
	}
	if got := m.FindBodySection(subject); !strings.Contains(string(got), "Subject: hello imap") {
		t.Errorf("BODY.PEEK[HEADER.FIELDS (Subject)] = %q", got)
	}

	// BODY[TEXT] without PEEK sets \Seen.
	text := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierText}
	msgs, err = cl.Fetch(imap.UIDSetNum(2), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{text}}).Collect()
	if err != nil || len(msgs) != 1 || !slices.Contains(msgs[0].Flags, imap.FlagSeen) {
		t.Fatalf("UID FETCH BODY[TEXT]: %+v, %v", msgs, err)
	}
	if got := string(msgs[0].FindBodySection(text)); got != "another text\r\n" {
		t.Errorf("BODY[TEXT] = %q", got)
	}

	// STORE, and SEARCH over flags, headers, text, size, dates, UIDs.
	if _, err := cl.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen, "project"}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	if got, err := cl.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsSet, Flags: []imap.Flag{imap.FlagAnswered}}, nil).Collect(); err != nil ||
		len(got) != 1 || !slices.Equal(got[0].Flags, []imap.Flag{imap.FlagAnswered}) {
		t.Fatalf("STORE FLAGS: %+v, %v", got, err)
	}
	search := func(c *imap.SearchCriteria) []uint32 {
		t.Helper()
		d, err := cl.Search(c, nil).Wait()
		if err != nil {
			t.Fatalf("SEARCH %+v: %v", c, err)
		}
		return d.AllSeqNums()
	}
	for _, tc := range []struct {
		name string
		c    *imap.SearchCriteria
		want []uint32
	}{
		{"flagged", &imap.SearchCriteria{Flag: []imap.Flag{imap.FlagFlagged}}, []uint32{1}},
		{"keyword", &imap.SearchCriteria{Flag: []imap.Flag{"project"}}, []uint32{1}},
		{"unanswered", &imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagAnswered}}, []uint32{1}},
		{"subject", &imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "HELLO"}}}, []uint32{1}},
		{"from", &imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "bob"}}}, []uint32{1, 2}},
		{"body", &imap.SearchCriteria{Body: []string{"body word"}}, []uint32{1}},
		{"text", &imap.SearchCriteria{Text: []string{"second"}}, []uint32{2}},
		{"larger", &imap.SearchCriteria{Larger: int64(len(msg2))}, []uint32{1}},
		{"since", &imap.SearchCriteria{Since: time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC)}, []uint32{1, 2}},
		{"before", &imap.SearchCriteria{Before: time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC)}, nil},
		{"sent since", &imap.SearchCriteria{SentSince: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}, []uint32{1, 2}},
		{"uid", &imap.SearchCriteria{UID: []imap.UIDSet{imap.UIDSetNum(2)}}, []uint32{2}},
		{"or", &imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{{Flag: []imap.Flag{imap.FlagAnswered}}, {Flag: []imap.Flag{"project"}}}}}, []uint32{1, 2}},
	} {
		if got := search(tc.c); !slices.Equal(got, tc.want) {
			t.Errorf("SEARCH %s = %v, want %v", tc.name, got, tc.want)
		}
	}
	if d, err := cl.UIDSearch(&imap.SearchCriteria{Flag: []imap.Flag{imap.FlagSeen}}, nil).Wait(); err != nil || !slices.Equal(d.AllUIDs(), []imap.UID{1}) {
		t.Errorf("UID SEARCH SEEN: %v, %v", d, err)
	}

	// COPY and MOVE keep the bytes and report COPYUID.
	cp, err := cl.Copy(imap.SeqSetNum(1), "Archive").Wait()
	if err != nil || cp.UIDValidity == 0 || len(cp.DestUIDs) != 1 {
		t.Fatalf("COPY: %+v, %v", cp, err)
	}
	if err := cl.Create(work2, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	mv, err := cl.Move(imap.SeqSetNum(2), work2).Wait()
	if err != nil || mv.DestUIDs.String() != "1" {
		t.Fatalf("MOVE: %+v, %v", mv, err)
	}
	if n := cl.Mailbox().NumMessages; n != 1 {
		t.Fatalf("after MOVE the folder has %d messages, want 1", n)
	}
	st, err := cl.Status(work2, &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 1 {
		t.Fatalf("STATUS after MOVE: %+v %v", st, err)
	}

	// EXPUNGE removes only \Deleted; UID EXPUNGE only the named UIDs.
	appendMsg(t, cl, work, testMessage("third", "3"))
	appendMsg(t, cl, work, testMessage("fourth", "4"))
	if err := cl.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Store(imap.SeqSetNum(2, 3), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	gone, err := cl.UIDExpunge(imap.UIDSetNum(3)).Collect()
	if err != nil || !slices.Equal(gone, []uint32{2}) {
		t.Fatalf("UID EXPUNGE 3: %v, %v", gone, err)
	}
	gone, err = cl.Expunge().Collect()
	if err != nil || !slices.Equal(gone, []uint32{2}) {
		t.Fatalf("EXPUNGE: %v, %v", gone, err)
	}
	msgs, err = cl.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true}).Collect()
	if err != nil || len(msgs) != 1 || msgs[0].UID != 1 || cl.Mailbox().NumMessages != 1 {
		t.Fatalf("after EXPUNGE: %+v, %v", msgs, err)
	}

	// EXAMINE is read-only.
	if _, err := cl.Select(work, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err == nil {
		t.Error("STORE in EXAMINE succeeded")
	}
}

// TestDeliveryReachesIdlingClient: mail sent through POST by another user
// on another node shows up in INBOX, and an idling client hears EXISTS
// when it arrives.
func TestDeliveryReachesIdlingClient(t *testing.T) {
	c := startCommunity(t)
	exists := make(chan uint32, 16)
	cl := dial(t, c, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				exists <- *d.NumMessages
			}
		},
	}})
	// The count comes from SELECT's answer: imapclient signals the
	// command's end before it records the selected mailbox, so
	// cl.Mailbox() may still be nil here.
	sel, err := cl.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	before := sel.NumMessages
	idle, err := cl.Idle()
	if err != nil {
		t.Fatal(err)
	}
	msg := testMessage(unique("delivered by post "), "over the ring")
	c.send(t, msg)
	select {
	case n := <-exists:
		if n != before+1 {
			t.Errorf("EXISTS %d, want %d", n, before+1)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("no EXISTS while idling")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	full := &imap.FetchItemBodySection{Peek: true}
	msgs, err := cl.Fetch(imap.SeqSetNum(before+1), &imap.FetchOptions{Envelope: true, BodySection: []*imap.FetchItemBodySection{full}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH delivered: %v, %v", msgs, err)
	}
	if got := msgs[0].FindBodySection(full); !bytes.Equal(got, msg) {
		t.Errorf("delivered bytes %q, want %q", got, msg)
	}
}

// TestPythonImaplib drives a full session with an independent client:
// login, list, select INBOX, append, fetch, store, search, copy, expunge,
// and IDLE while another user's mail is delivered through POST.
func TestPythonImaplib(t *testing.T) {
	c := startCommunity(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	host, port, _ := net.SplitHostPort(c.addr)
	cmd := exec.Command(py, "-c", pythonSession, host, port, alice, "alice-pw", unique("Py"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		out = append(out, sc.Text())
		if sc.Text() == "IDLING" {
			c.send(t, testMessage(unique("to python "), "idle wakes up"))
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("imaplib session failed: %v\nstdout: %s\nstderr: %s", err, strings.Join(out, "\n"), stderr.Bytes())
	}
	if !slices.Contains(out, "imaplib session ok") {
		t.Fatalf("imaplib session output:\n%s\n%s", strings.Join(out, "\n"), stderr.Bytes())
	}
}

const pythonSession = `
import imaplib, re, sys, time
host, port, user, pw, box = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

def ok(res, what):
    typ, data = res
    if typ != 'OK':
        sys.exit('%s: %s %r' % (what, typ, data))
    return data

def count(name):
    st = ok(m.status(name, '(MESSAGES)'), 'status')[0]
    return int(re.search(rb'MESSAGES (\d+)', st).group(1))

m = imaplib.IMAP4(host, port)
ok(m.login(user, pw), 'login')
boxes = b' '.join(ok(m.list(), 'list'))
for want in (b'INBOX', b'\\Sent', b'\\Drafts', b'\\Trash', b'\\Junk', b'\\Archive'):
    assert want in boxes, (want, boxes)
ok(m.create(box), 'create')
ok(m.select('INBOX'), 'select')
subject = 'from python ' + box
msg = ('From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: %s\r\n'
       'Date: Wed, 04 Mar 2026 05:06:07 +0000\r\n\r\nHello from imaplib.\r\n' % subject).encode()
data = ok(m.append('INBOX', None, imaplib.Time2Internaldate(time.time()), msg), 'append')
uid = re.search(rb'APPENDUID \d+ (\d+)', data[0]).group(1).decode()
ok(m.noop(), 'noop')
typ, data = m.uid('FETCH', uid, '(BODY.PEEK[] FLAGS)')
assert typ == 'OK' and data[0][1] == msg, data
assert b'\\Seen' not in data[0][0], data
ok(m.uid('STORE', uid, '+FLAGS', '(\\Seen)'), 'store')
typ, data = m.uid('FETCH', uid, '(FLAGS)')
assert b'\\Seen' in data[0], data
assert ok(m.uid('SEARCH', None, 'SEEN', 'SUBJECT', '"%s"' % subject), 'search')[0] == uid.encode()
assert uid.encode() not in ok(m.uid('SEARCH', None, 'UNSEEN'), 'search unseen')[0].split()
arch = count('Archive')
data = ok(m.uid('COPY', uid, 'Archive'), 'copy')
assert count('Archive') == arch + 1
ok(m.uid('COPY', uid, box), 'copy')
assert count(box) == 1
ok(m.uid('STORE', uid, '+FLAGS', '(\\Deleted)'), 'store deleted')
typ, data = m.expunge()
assert typ == 'OK' and data[0] is not None, data
assert uid.encode() not in ok(m.uid('SEARCH', None, 'ALL'), 'search all')[0].split()

tag = m._new_tag()
m.send(tag + b' IDLE\r\n')
line = m.readline()
assert line.startswith(b'+'), line
print('IDLING', flush=True)
m.sock.settimeout(120)
while not re.match(rb'\* \d+ EXISTS', line):
    line = m.readline()
m.send(b'DONE\r\n')
while not line.startswith(tag):
    line = m.readline()
assert line.startswith(tag + b' OK'), line
m.sock.settimeout(None)
found = ok(m.uid('SEARCH', None, 'SUBJECT', '"to python"', 'BODY', '"idle wakes up"'), 'search delivered')[0]
assert found, found
got = found.split()[-1]
typ, data = m.uid('MOVE', got, box)
assert typ == 'OK', data
assert got not in ok(m.uid('SEARCH', None, 'ALL'), 'search after move')[0].split()
assert count(box) == 2
m.logout()
print('imaplib session ok')
`

// serve starts another IMAP server for alice on node 0, with cfg's
// Loop, Mail and Auth filled in; implicit says to serve implicit TLS.
func (c *community) serve(t *testing.T, cfg imapd.Config, implicit bool) string {
	t.Helper()
	cfg.Loop, cfg.Mail, cfg.Auth = c.nodes[0], c.nodes[0].Mail, passwords{alice: "alice-pw"}
	srv := imapd.New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if implicit {
		go srv.ServeTLS(ln)
	} else {
		go srv.Serve(ln)
	}
	return ln.Addr().String()
}

func TestTLS(t *testing.T) {
	c := startCommunity(t)
	tcfg, err := imapd.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	starttls := c.serve(t, imapd.Config{TLS: tcfg}, false)
	implicit := c.serve(t, imapd.Config{TLS: tcfg}, true)
	plain, err := imapclient.DialInsecure(starttls, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := plain.Login(alice, "alice-pw").Wait(); err == nil {
		t.Error("LOGIN before STARTTLS succeeded")
	}
	opts := &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}}
	for name, dial := range map[string]func() (*imapclient.Client, error){
		"STARTTLS": func() (*imapclient.Client, error) { return imapclient.DialStartTLS(starttls, opts) },
		"implicit": func() (*imapclient.Client, error) { return imapclient.DialTLS(implicit, opts) },
	} {
		cl, err := dial()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := cl.Login(alice, "alice-pw").Wait(); err != nil {
			t.Errorf("%s: LOGIN: %v", name, err)
		}
		if _, err := cl.Select("INBOX", nil).Wait(); err != nil {
			t.Errorf("%s: SELECT: %v", name, err)
		}
		if caps := cl.Caps(); name == "implicit" && (caps.Has(imap.CapStartTLS) || caps.Has(imap.CapLoginDisabled)) {
			t.Errorf("%s: capabilities %v", name, caps)
		}
		cl.Close()
	}
	// Bad input over implicit TLS gets the same answers as in the clear
	// (TestHugeInputRefused, TestInvalidUTF8Names).
	conn, err := tls.Dial("tcp", implicit, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Minute)) // against a hang, not a timing
	r := &rawConn{t: t, conn: conn, br: bufio.NewReader(conn)}
	if l := r.line(); !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting %q", l)
	}
	if l := r.cmd("a", "a LOGIN {10485760}"); !strings.HasPrefix(l, "a NO [TOOBIG]") {
		t.Fatalf("LOGIN with a 10 MiB literal over TLS: %q", l)
	}
	if l := r.cmd("l", "l LOGIN "+alice+" alice-pw"); !strings.HasPrefix(l, "l OK") {
		t.Fatalf("LOGIN over TLS: %q", l)
	}
	if l := r.cmd("c", "c CREATE \"bad\xff\xfe\""); !strings.HasPrefix(l, "c BAD") || !strings.Contains(l, "UTF-8") {
		t.Fatalf("CREATE with a name that is not UTF-8 over TLS: %q", l)
	}
}

// newFolder creates a folder named prefix and a number new to this run.
func newFolder(t *testing.T, cl *imapclient.Client, prefix string) string {
	t.Helper()
	name := unique(prefix)
	if err := cl.Create(name, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	return name
}

// tryAppend appends msg to mailbox and returns the server's answer.
func tryAppend(cl *imapclient.Client, mailbox string, msg []byte) error {
	cmd := cl.Append(mailbox, int64(len(msg)), nil)
	cmd.Write(msg)
	cmd.Close()
	_, err := cmd.Wait()
	return err
}

// wantNo checks that err is a NO with the response code and a text
// containing text.
func wantNo(t *testing.T, what string, err error, code imap.ResponseCode, text string) {
	t.Helper()
	var ierr *imap.Error
	if !errors.As(err, &ierr) || ierr.Type != imap.StatusResponseTypeNo || ierr.Code != code || !strings.Contains(ierr.Text, text) {
		t.Fatalf("%s: %v, want NO [%s] ...%s...", what, err, code, text)
	}
}

// TestStorageFaults: while node 0's disk is full, or failing, APPEND and
// STORE answer NO [UNAVAILABLE] saying so, and change nothing; once the
// disk works again they succeed. The node stays up throughout.
func TestStorageFaults(t *testing.T) {
	c := startCommunity(t)
	cl := dial(t, c, nil)
	folder := newFolder(t, cl, "faults")
	appendMsg(t, cl, folder, testMessage(unique("before the fault"), "kept"))
	if _, err := cl.Select(folder, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		cause error
		text  string
	}{{syscall.ENOSPC, "disk is full"}, {syscall.EIO, "disk error"}} {
		c.faults.Fail(f.cause)
		err := tryAppend(cl, folder, testMessage(unique("during the fault"), "refused"))
		wantNo(t, fmt.Sprintf("APPEND under %v", f.cause), err, imap.ResponseCodeUnavailable, f.text)
		_, err = cl.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Collect()
		wantNo(t, fmt.Sprintf("STORE under %v", f.cause), err, imap.ResponseCodeUnavailable, f.text)
		c.faults.Fail(nil)
	}
	appendMsg(t, cl, folder, testMessage(unique("after the fault"), "stored"))
	if _, err := cl.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Collect(); err != nil {
		t.Fatalf("STORE after the fault: %v", err)
	}
	st, err := cl.Status(folder, &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 2 {
		t.Fatalf("after the faults: %v messages, %v; want 2", st, err)
	}
}

// TestUnreachableReplicas: on a community of its own, with node 0 cut off
// from the other two (two of every object's three replicas unreachable,
// so no majority can store a message), APPEND answers NO [UNAVAILABLE],
// never OK, and stores nothing; once the links are back, the client's
// retry is stored, once.
func TestUnreachableReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three real nodes")
	}
	c, err := newCommunityWith(t, func(cfg *node.Config) {
		cfg.Past = past.DefaultConfig()
		cfg.Past.InsertTimeout = 3 * env.Second // fail in seconds, not the default 30
	})
	if c != nil {
		t.Cleanup(c.close)
	}
	if err != nil {
		t.Fatal(err)
	}
	cl := dial(t, c, nil)
	folder := newFolder(t, cl, "Cut")
	appendMsg(t, cl, folder, testMessage(unique("before the cut"), "kept"))
	// Both ends of both links, so that every side sees its sends fail.
	c.links[0].Block(c.nodes[1].Addr(), c.nodes[2].Addr())
	c.links[1].Block(c.nodes[0].Addr())
	c.links[2].Block(c.nodes[0].Addr())
	msg := testMessage(unique("while cut off"), "retried")
	err = tryAppend(cl, folder, msg)
	wantNo(t, "APPEND with two of three replicas unreachable", err, imap.ResponseCodeUnavailable, "")
	for _, f := range c.links {
		f.UnblockAll()
	}
	waitFor(t, "an OK for the retry", 90*time.Second, func() bool { return tryAppend(cl, folder, msg) == nil })
	st, err := cl.Status(folder, &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 2 {
		t.Fatalf("after the cut: %v messages, %v; want 2", st, err)
	}
}

// TestAppendOverQuota: an APPEND that would take the user past the quota
// is NO [OVERQUOTA] and stores nothing; a small one still fits.
func TestAppendOverQuota(t *testing.T) {
	c := startCommunity(t)
	cl := dial(t, c, nil)
	err := tryAppend(cl, "Drafts", testMessage(unique("over quota"), strings.Repeat("x", quota)))
	wantNo(t, "APPEND over the quota", err, imap.ResponseCodeOverQuota, "Over quota")
	appendMsg(t, cl, "Drafts", testMessage(unique("within quota"), "small"))
}

func TestAppendTooBig(t *testing.T) {
	c := startCommunity(t)
	addr := c.serve(t, imapd.Config{InsecureAuth: true, AppendLimit: 100}, false)
	cl, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Login(alice, "alice-pw").Wait(); err != nil {
		t.Fatal(err)
	}
	before, err := cl.Status("Drafts", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	err = tryAppend(cl, "Drafts", testMessage(unique("too big"), strings.Repeat("x", 200)))
	var ierr *imap.Error
	if !errors.As(err, &ierr) || ierr.Code != imap.ResponseCodeTooBig {
		t.Fatalf("APPEND over the limit: %v", err)
	}
	// go-imap's client sent the literal without waiting (LITERAL+), so the
	// server may end the connection after refusing it (RFC 7888 section
	// 4); the server itself lives on, and nothing was stored.
	cl2, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	if err := cl2.Login(alice, "alice-pw").Wait(); err != nil {
		t.Fatal(err)
	}
	after, err := cl2.Status("Drafts", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if *after.NumMessages != *before.NumMessages {
		t.Fatalf("a refused APPEND stored something: %d -> %d", *before.NumMessages, *after.NumMessages)
	}
}

// TestTwoSessions: what one session changes, another hears at its next
// command: EXISTS, FETCH FLAGS, and EXPUNGE (RFC 9051 section 7.5).
func TestTwoSessions(t *testing.T) {
	c := startCommunity(t)
	box := unique("Shared")
	a := dial(t, c, nil)
	if err := a.Create(box, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var expunged []uint32
	flags := map[uint32][]imap.Flag{}
	b := dial(t, c, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Expunge: func(n uint32) { mu.Lock(); expunged = append(expunged, n); mu.Unlock() },
		Fetch: func(m *imapclient.FetchMessageData) {
			buf, err := m.Collect()
			if err == nil {
				mu.Lock()
				flags[buf.SeqNum] = buf.Flags
				mu.Unlock()
			}
		},
	}})
	for _, cl := range []*imapclient.Client{a, b} {
		if _, err := cl.Select(box, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	appendMsg(t, a, box, testMessage(unique("one"), "1"))
	appendMsg(t, a, box, testMessage(unique("two"), "2"))
	if err := b.Noop().Wait(); err != nil || b.Mailbox().NumMessages != 2 {
		t.Fatalf("B sees %d messages, %v", b.Mailbox().NumMessages, err)
	}
	if _, err := a.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	if err := b.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	// imapclient hands unsolicited FETCH data to the handler on a
	// goroutine of its own: await it.
	waitFor(t, "B to hear FETCH 1 (FLAGS (\\Deleted))", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Equal(flags[1], []imap.Flag{imap.FlagDeleted})
	})
	if _, err := a.Expunge().Collect(); err != nil {
		t.Fatal(err)
	}
	// During FETCH, B's numbers stay put: message 2 is still number 2.
	msgs, err := b.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{UID: true}).Collect()
	if err != nil || len(msgs) != 1 || msgs[0].UID != 2 {
		t.Fatalf("B FETCH 2 after A's expunge: %+v, %v", msgs, err)
	}
	mu.Lock()
	early := len(expunged)
	mu.Unlock()
	if early != 0 {
		t.Fatalf("EXPUNGE sent during FETCH: %v", expunged)
	}
	if err := b.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(expunged, []uint32{1}) || b.Mailbox().NumMessages != 1 {
		t.Fatalf("B heard EXPUNGE %v, has %d messages", expunged, b.Mailbox().NumMessages)
	}
}

// fuzzFolder fills the folder the fuzzer selects with well- and
// ill-formed messages, once per process.
var fuzzFolder sync.Once

var fuzzMessages = []string{
	"From: a@example.org\r\nSubject: plain\r\n\r\nhello\r\n",
	"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\none\r\n--b\r\n" +
		"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b--\r\n",
	"Subject: half a multipart\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\nno end",
	"\xff\xfe: \x80\r\n\r\n\x00",
}

// FuzzCommandLines sends a command line in each state (not
// authenticated, authenticated, selected) and checks that nothing panics
// and that the server still serves a new connection afterwards.
func FuzzCommandLines(f *testing.F) {
	for _, line := range []string{
		`a LIST "" *`, `a LIST (SPECIAL-USE) "" * RETURN (STATUS (MESSAGES SIZE))`, `a STATUS INBOX (MESSAGES UIDNEXT SIZE DELETED)`,
		`a FETCH 1:* (FLAGS BODY.PEEK[]<0.5> BODYSTRUCTURE ENVELOPE)`, `a FETCH 4294967295 BODY.PEEK[1.2.3.HEADER]`,
		`a UID FETCH *:1 (BINARY.PEEK[1] BINARY.SIZE[1])`, `a SEARCH OR SEEN (TEXT "x" NOT LARGER 3) UID 1:*`, `a SEARCH RETURN (SAVE) ALL`,
		`a FETCH $ FLAGS`, `a UID SEARCH CHARSET UTF-8 SUBJECT "\xc3\xa9"`, `a STORE 1:* +FLAGS.SILENT (fuzz)`, `a COPY 1 NoSuchBox`,
		`a SELECT "Fuzz/\xff"`, `a APPEND Fuzz {5}`, `a CREATE ""`, `a RENAME INBOX Fuzz2`, `a NAMESPACE`, `a IDLE`, "\xff\xfe\x00",
		`a LOGIN alice@example.org alice-pw`, `a AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUub3JnAGFsaWNlLXB3`, `a EXAMINE Fuzz`, `a UNSELECT`,
	} {
		for state := range 3 {
			f.Add(uint8(state), line)
		}
	}
	f.Fuzz(func(t *testing.T, state uint8, line string) {
		c := startCommunity(t)
		if strings.ContainsAny(line, "\r\n") {
			return // one line per input
		}
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		expect := func(tag string) {
			t.Helper()
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("waiting for %q: %v", tag, err)
				}
				if strings.HasPrefix(l, tag+" ") {
					if !strings.HasPrefix(l, tag+" OK") {
						t.Fatalf("%s: %s", tag, l)
					}
					return
				}
			}
		}
		br.ReadString('\n') // greeting
		if state%3 >= 1 {
			fmt.Fprintf(conn, "l LOGIN %s alice-pw\r\n", alice)
			expect("l")
		}
		if state%3 == 2 {
			fuzzFolder.Do(func() {
				cl := dial(t, c, nil)
				cl.Create("Fuzz", nil).Wait()
				for _, m := range fuzzMessages {
					appendMsg(t, cl, "Fuzz", []byte(m))
				}
				cl.Close()
			})
			fmt.Fprintf(conn, "s SELECT Fuzz\r\n")
			expect("s")
		}
		fmt.Fprintf(conn, "%s\r\nDONE\r\nz NOOP\r\n", line)
		// The answer may be anything, or the connection may end; it must
		// not take the server down.
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		for {
			l, err := br.ReadString('\n')
			if err != nil || strings.HasPrefix(l, "z ") {
				break
			}
		}
		if p := c.panics.all(); len(p) > 0 {
			t.Fatalf("server panicked on %q in state %d: %v", line, state%3, p)
		}
		cl, err := imapclient.DialInsecure(c.addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := cl.Login(alice, "alice-pw").Wait(); err != nil {
			t.Fatalf("server unusable after %q: %v", line, err)
		}
	})
}

// TestUIDsSurviveRestart: UIDs, UIDVALIDITY, flags and bytes are POST's,
// so a client sees the same mailbox after the node restarts (RFC 9051
// section 2.3.1.1).
func TestUIDsSurviveRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three real nodes")
	}
	c, err := newCommunity(t)
	if c != nil {
		defer c.close()
	}
	if err != nil {
		t.Fatal(err)
	}
	cl := dial(t, c, nil)
	msg := testMessage("before restart", "kept")
	appendMsg(t, cl, "INBOX", msg, imap.FlagFlagged)
	appendMsg(t, cl, "INBOX", testMessage("second before restart", "kept too"))
	sel, err := cl.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Unsubscribe("Junk").Wait(); err != nil {
		t.Fatal(err)
	}
	cl.Close()

	c.restart(t)
	// The subscriptions are the user's, in POST: a restart keeps them.
	if got := lsub(t, c); slices.Contains(got, "Junk") || !slices.Contains(got, "INBOX") {
		t.Fatalf("LSUB after restart: %v, want INBOX and not Junk", got)
	}
	cl = dial(t, c, nil)
	again, err := cl.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if again.UIDValidity != sel.UIDValidity || again.UIDNext != sel.UIDNext || again.NumMessages != 2 {
		t.Fatalf("after restart: UIDVALIDITY %d UIDNEXT %d EXISTS %d, before %d %d %d",
			again.UIDValidity, again.UIDNext, again.NumMessages, sel.UIDValidity, sel.UIDNext, sel.NumMessages)
	}
	full := &imap.FetchItemBodySection{Peek: true}
	msgs, err := cl.Fetch(imap.UIDSetNum(1), &imap.FetchOptions{Flags: true, BodySection: []*imap.FetchItemBodySection{full}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("UID FETCH 1 after restart: %v, %v", msgs, err)
	}
	if !slices.Equal(msgs[0].Flags, []imap.Flag{imap.FlagFlagged}) || !bytes.Equal(msgs[0].FindBodySection(full), msg) {
		t.Fatalf("UID 1 after restart: flags %v, body %q", msgs[0].Flags, msgs[0].FindBodySection(full))
	}
}

// fillFolder creates a folder holding n copies of one message (the body
// is stored once; each copy is a log entry of its own, as after n
// deliveries) and returns its name.
func fillFolder(tb testing.TB, c *community, n int) string {
	tb.Helper()
	name := unique("Bench")
	nd := c.nodes[0]
	var f *post.Folder
	created := make(chan error, 1)
	nd.Do(func() {
		a := nd.Mail().User(alice)
		a.CreateFolder(name, func(err error) {
			f, _ = a.Folder(name)
			created <- err
		})
	})
	if err := <-created; err != nil {
		tb.Fatal(err)
	}
	first := make(chan error, 1)
	var uid uint32
	nd.Do(func() {
		f.Append(testMessage("bench", strings.Repeat("body text ", 100)), nil, time.Now().UnixMicro(), func(u uint32, err error) {
			uid = u
			first <- err
		})
	})
	if err := <-first; err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, n)
	nd.Do(func() {
		m, _ := f.Get(uid)
		for range n - 1 {
			f.AppendStored(m.Body, nil, m.Date, func(_ uint32, err error) { done <- err })
		}
	})
	for range n - 1 {
		if err := <-done; err != nil {
			tb.Fatal(err)
		}
	}
	return name
}

// fillFolderDistinct creates a folder holding n different messages, each
// body a PAST object of its own (as after n deliveries of different
// mail), and returns its name.
func fillFolderDistinct(tb testing.TB, c *community, n int) string {
	tb.Helper()
	name := unique("Bench")
	nd := c.nodes[0]
	var f *post.Folder
	created := make(chan error, 1)
	nd.Do(func() {
		a := nd.Mail().User(alice)
		a.CreateFolder(name, func(err error) {
			f, _ = a.Folder(name)
			created <- err
		})
	})
	if err := <-created; err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, n)
	body := strings.Repeat("body text ", 100)
	nd.Do(func() {
		for i := range n {
			msg := testMessage(fmt.Sprintf("bench %d", i), body)
			f.Append(msg, nil, time.Now().UnixMicro(), func(_ uint32, err error) { done <- err })
		}
	})
	for range n {
		if err := <-done; err != nil {
			tb.Fatal(err)
		}
	}
	return name
}

// BenchmarkSelect10000: SELECT of a 10,000-message folder (issue 7's
// number), over a real client on loopback.
func BenchmarkSelect10000(b *testing.B) {
	c := startCommunity(b)
	name := fillFolder(b, c, 10000)
	cl, err := imapclient.DialInsecure(c.addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Login(alice, "alice-pw").Wait(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		sel, err := cl.Select(name, nil).Wait()
		if err != nil || sel.NumMessages != 10000 {
			b.Fatalf("SELECT: %+v, %v", sel, err)
		}
	}
}

// BenchmarkFetch1000Headers: FETCH 1:1000 BODY.PEEK[HEADER] (issue 7's
// number): every message's bytes come from PAST. The 1,000 messages
// share one body (fillFolder), so this is one object read 1,000 times;
// BenchmarkFetch1000DistinctHeaders reads 1,000 objects.
func BenchmarkFetch1000Headers(b *testing.B) {
	c := startCommunity(b)
	benchFetch1000(b, c, fillFolder(b, c, 1000))
}

// BenchmarkFetch1000DistinctHeaders: the same FETCH over 1,000 different
// messages, each body a PAST object of its own.
func BenchmarkFetch1000DistinctHeaders(b *testing.B) {
	c := startCommunity(b)
	benchFetch1000(b, c, fillFolderDistinct(b, c, 1000))
}

func benchFetch1000(b *testing.B, c *community, name string) {
	cl, err := imapclient.DialInsecure(c.addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Login(alice, "alice-pw").Wait(); err != nil {
		b.Fatal(err)
	}
	if _, err := cl.Select(name, nil).Wait(); err != nil {
		b.Fatal(err)
	}
	header := &imap.FetchItemBodySection{Peek: true, Specifier: imap.PartSpecifierHeader}
	b.ResetTimer()
	for b.Loop() {
		msgs, err := cl.Fetch(imap.SeqSet{{Start: 1, Stop: 1000}}, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{header}}).Collect()
		if err != nil || len(msgs) != 1000 {
			b.Fatalf("FETCH: %d messages, %v", len(msgs), err)
		}
	}
}

// TestMbsync syncs a folder both ways with mbsync (isync), an
// independent client that leans on UIDs, UIDPLUS and flags.
func TestMbsync(t *testing.T) {
	c := startCommunity(t)
	mbsync, err := exec.LookPath("mbsync")
	if err != nil {
		t.Skip("mbsync (Debian package isync) not installed")
	}
	box := unique("Sync")
	cl := dial(t, c, nil)
	if err := cl.Create(box, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendMsg(t, cl, box, testMessage(unique("remote one"), "1"), imap.FlagFlagged)
	appendMsg(t, cl, box, testMessage(unique("remote two"), "2"))

	dir := t.TempDir()
	host, port, _ := net.SplitHostPort(c.addr)
	cfg := filepath.Join(dir, "mbsyncrc")
	maildir := filepath.Join(dir, "mail")
	os.MkdirAll(maildir, 0o700)
	rc := fmt.Sprintf(`IMAPAccount epost
Host %s
Port %s
User %s
Pass alice-pw
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account epost

MaildirStore local
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns %s
Create Both
Expunge Both
SyncState *
`, host, port, alice, maildir, maildir, box)
	if err := os.WriteFile(cfg, []byte(rc), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func() {
		t.Helper()
		out, err := exec.Command(mbsync, "-c", cfg, "-a").CombinedOutput()
		if err != nil {
			t.Fatalf("mbsync: %v\n%s", err, out)
		}
	}
	run()
	files := func() []string {
		var out []string
		for _, sub := range []string{"cur", "new"} {
			es, _ := os.ReadDir(filepath.Join(maildir, box, sub))
			for _, e := range es {
				out = append(out, filepath.Join(maildir, box, sub, e.Name()))
			}
		}
		sort.Strings(out)
		return out
	}
	got := files()
	if len(got) != 2 {
		t.Fatalf("maildir after the first sync: %v", got)
	}
	flagged := ""
	for _, f := range got {
		if strings.HasSuffix(f, ",F") || strings.Contains(filepath.Base(f), ":2,F") {
			flagged = f
		}
	}
	if flagged == "" {
		t.Fatalf("\\Flagged did not reach the maildir: %v", got)
	}

	// Locally: a new message, the flagged one read, the other deleted.
	local := testMessage(unique("local new"), "from the maildir")
	if err := os.WriteFile(filepath.Join(maildir, box, "new", "1700000000.1_1.test"), local, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(flagged, flagged+"S"); err != nil {
		t.Fatal(err)
	}
	for _, f := range got {
		if f != flagged {
			if err := os.Rename(f, strings.TrimSuffix(f, ":2,")+":2,T"); err != nil {
				t.Fatal(err)
			}
		}
	}
	run()

	sel, err := cl.Select(box, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages != 2 {
		t.Fatalf("after syncing back the folder has %d messages, want 2", sel.NumMessages)
	}
	full := &imap.FetchItemBodySection{Peek: true}
	msgs, err := cl.Fetch(imap.SeqSetNum(1, 2), &imap.FetchOptions{Flags: true, BodySection: []*imap.FetchItemBodySection{full}}).Collect()
	if err != nil || len(msgs) != 2 {
		t.Fatalf("FETCH: %v, %v", msgs, err)
	}
	if !slices.Equal(msgs[0].Flags, []imap.Flag{imap.FlagFlagged, imap.FlagSeen}) {
		t.Errorf("flags of the first message: %v", msgs[0].Flags)
	}
	// mbsync adds an X-TUID header to what it uploads, to find it again.
	uploaded := regexp.MustCompile(`X-TUID: [^\r]*\r\n`).ReplaceAll(msgs[1].FindBodySection(full), nil)
	if !bytes.Equal(uploaded, local) {
		t.Errorf("uploaded message: %q, want %q", uploaded, local)
	}
}

// TestBrokenMIME: messages that do not parse are stored as they are and
// FETCH still answers every item.
func TestBrokenMIME(t *testing.T) {
	c := startCommunity(t)
	cl := dial(t, c, nil)
	box := newFolder(t, cl, "Broken")
	broken := [][]byte{
		[]byte("no header at all, just text\r\n"),
		[]byte("Subject: half a multipart\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\nno end"),
		[]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\n--b--\r\n"),
		[]byte("Subject: =?bogus?Q?x?=\r\nFrom: <<<@>>>\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n"),
		{0xff, 0xfe, ':', ' ', 0x80, '\r', '\n', '\r', '\n', 0x00},
	}
	for _, b := range broken {
		appendMsg(t, cl, box, b)
	}
	if _, err := cl.Select(box, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	full := &imap.FetchItemBodySection{Peek: true}
	part := &imap.FetchItemBodySection{Peek: true, Part: []int{1}}
	for _, bs := range []*imap.FetchItemBodyStructure{{Extended: true}, {Extended: false}} {
		msgs, err := cl.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Envelope: true, BodyStructure: bs, RFC822Size: true,
			BodySection: []*imap.FetchItemBodySection{full, part}}).Collect()
		if err != nil || len(msgs) != len(broken) {
			t.Fatalf("FETCH (BODYSTRUCTURE extended %v) of broken messages: %d answers, %v", bs.Extended, len(msgs), err)
		}
		for i, m := range msgs {
			if !bytes.Equal(m.FindBodySection(full), broken[i]) || m.RFC822Size != int64(len(broken[i])) {
				t.Errorf("message %d: stored %q (size %d), want %q", i+1, m.FindBodySection(full), m.RFC822Size, broken[i])
			}
		}
	}
	if err := cl.Noop().Wait(); err != nil {
		t.Fatalf("session did not survive: %v", err)
	}
	if p := c.panics.all(); len(p) > 0 {
		t.Fatalf("server panicked: %v", p)
	}
}

// TestIdleHearsOtherSessions: an idling client hears another session's
// flag change and expunge as they happen (POST's folder watch, no
// polling).
func TestIdleHearsOtherSessions(t *testing.T) {
	c := startCommunity(t)
	box := unique("Idle")
	a := dial(t, c, nil)
	if err := a.Create(box, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendMsg(t, a, box, testMessage(unique("idle one"), "1"))
	appendMsg(t, a, box, testMessage(unique("idle two"), "2"))
	fetches := make(chan []imap.Flag, 8)
	expunges := make(chan uint32, 8)
	b := dial(t, c, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Expunge: func(n uint32) { expunges <- n },
		Fetch: func(m *imapclient.FetchMessageData) {
			if buf, err := m.Collect(); err == nil {
				fetches <- buf.Flags
			}
		},
	}})
	for _, cl := range []*imapclient.Client{a, b} {
		if _, err := cl.Select(box, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	idle, err := b.Idle()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-fetches:
		if !slices.Equal(f, []imap.Flag{imap.FlagDeleted}) {
			t.Errorf("idling client heard flags %v", f)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no FETCH FLAGS while idling")
	}
	if _, err := a.Expunge().Collect(); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-expunges:
		if n != 2 {
			t.Errorf("idling client heard EXPUNGE %d, want 2", n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no EXPUNGE while idling")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := b.Mailbox().NumMessages; n != 1 {
		t.Errorf("idling client counts %d messages, want 1", n)
	}
}
