package scenario

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/post"
	"github.com/epost-mail/epost/internal/sim"
	"github.com/epost-mail/epost/internal/store"
	"github.com/epost-mail/epost/internal/wire"
)

func testPostConfig() post.Config {
	c := post.DefaultConfig()
	c.PollPeriod = time1m
	return c
}

// newMail builds n nodes and one user on each of the first u hosts, and
// waits until every mailbox is loaded.
func newMail(t *testing.T, seed uint64, n, u int) (*Mail, []sim.HostID) {
	t.Helper()
	return newMailWith(t, seed, n, u, testPostConfig())
}

// newMailWith is newMail with a given POST configuration.
func newMailWith(t *testing.T, seed uint64, n, u int, pc post.Config) (*Mail, []sim.HostID) {
	t.Helper()
	sc := sim.DefaultConfig(seed)
	sc.InvariantEvery = 0
	m, err := NewMail(sc, overlay.SimConfig(), testPastConfig(), pc)
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := m.BuildStorage(n, 200*env.Millisecond, 2*env.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < u; i++ {
		if _, err := m.AddUser(fmt.Sprintf("u%d@test.epost", i), hosts[i]); err != nil {
			t.Fatal(err)
		}
	}
	awaitMail(t, m, "mailboxes loaded", 5*env.Minute, func() bool {
		for i := range m.Users {
			if a := m.Account(i); a == nil || !a.Ready() {
				return false
			}
		}
		return true
	})
	return m, hosts
}

func awaitMail(t *testing.T, m *Mail, what string, limit env.Duration, cond func() bool) {
	t.Helper()
	await(t, m.Storage, what, limit, cond)
}

func send(t *testing.T, m *Mail, from int, to []int, body []byte) error {
	t.Helper()
	var addrs []string
	for _, r := range to {
		addrs = append(addrs, m.Users[r].Address)
	}
	var err error
	done := false
	m.Post(m.Users[from].Host).Send(m.Users[from].Address, addrs, body, func(e error) { err, done = e, true })
	awaitMail(t, m, "send", 2*time1m, func() bool { return done })
	return err
}

func inbox(m *Mail, u int) []*post.Message {
	a := m.Account(u)
	if a == nil {
		return nil
	}
	f, ok := a.Folder("INBOX")
	if !ok {
		return nil
	}
	return f.Messages()
}

func fetch(t *testing.T, m *Mail, u int, folder string, uid uint32) ([]byte, error) {
	t.Helper()
	f, ok := m.Account(u).Folder(folder)
	if !ok {
		t.Fatalf("no folder %s", folder)
	}
	var b []byte
	var err error
	done := false
	f.Fetch(uid, func(d []byte, e error) { b, err, done = d, e, true })
	awaitMail(t, m, "fetch", 2*time1m, func() bool { return done })
	return b, err
}

// call starts a POST operation and runs the simulation until it reports.
func call(t *testing.T, m *Mail, what string, f func(done func(error))) error {
	t.Helper()
	var err error
	done := false
	f(func(e error) { err, done = e, true })
	awaitMail(t, m, what, 2*time1m, func() bool { return done })
	return err
}

// TestQuotaCountsDistinctBodies: a user's usage is the size of the
// distinct bodies in their folders (a copy counts once, a body counts
// until its last copy is expunged or its folder deleted), it survives a
// restart (rebuilt from the log, snapshots included), and an APPEND past
// the quota fails with ErrOverQuota.
func TestQuotaCountsDistinctBodies(t *testing.T) {
	pc := testPostConfig()
	pc.Quota = 1000
	pc.CheckpointEvery = 3 // snapshots too
	m, _ := newMailWith(t, 14, 10, 1, pc)
	a := m.Account(0)
	drafts, _ := a.Folder("Drafts")
	arch, _ := a.Folder("Archive")
	add := func(f *post.Folder, size int) error {
		return call(t, m, "append", func(d func(error)) {
			f.Append(bytes.Repeat([]byte("x"), size), nil, 0, func(_ uint32, err error) { d(err) })
		})
	}
	want := func(what string, n int64) {
		t.Helper()
		if got := m.Account(0).Usage(); got != n {
			t.Fatalf("%s: usage %d, want %d", what, got, n)
		}
	}
	ok := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	ok("append A", add(drafts, 300))
	want("A", 300)
	a1 := drafts.Messages()[0].UID
	ok("copy A", call(t, m, "copy", func(d func(error)) {
		drafts.Copy([]uint32{a1}, arch, func(_ []uint32, err error) { d(err) })
	}))
	want("A copied", 300)
	ok("append B", add(drafts, 400))
	want("A, B", 700)
	if err := add(drafts, 400); !errors.Is(err, post.ErrOverQuota) {
		t.Fatalf("append past the quota: %v, want ErrOverQuota", err)
	}
	ok("expunge A from Drafts", call(t, m, "expunge", func(d func(error)) { drafts.Expunge([]uint32{a1}, d) }))
	want("A still archived", 700)
	ok("expunge A from Archive", call(t, m, "expunge", func(d func(error)) { arch.Expunge([]uint32{arch.Messages()[0].UID}, d) }))
	want("B", 400)
	ok("append C", add(drafts, 400))
	want("B, C", 800)

	m.Crash(m.Users[0].Host)
	m.S.Restart(m.Users[0].Host)
	awaitMail(t, m, "mailbox reloaded", 5*time1m, func() bool { a := m.Account(0); return a != nil && a.Ready() })
	want("after a restart", 800)
	ok("delete Drafts", call(t, m, "delete", func(d func(error)) { m.Account(0).DeleteFolder("Drafts", d) }))
	want("Drafts deleted", 0)
}

func TestMailIsDeliveredAfterTheSenderDies(t *testing.T) {
	m, _ := newMail(t, 11, 20, 3)
	body := []byte("Subject: hi\r\n\r\nthe sender dies after 250\r\n")
	if err := send(t, m, 0, []int{1, 2}, body); err != nil {
		t.Fatal(err)
	}
	m.Crash(m.Users[0].Host) // right after the acknowledgement
	awaitMail(t, m, "delivered to both", 10*time1m, func() bool { return len(inbox(m, 1)) == 1 && len(inbox(m, 2)) == 1 })
	b, err := fetch(t, m, 1, "INBOX", inbox(m, 1)[0].UID)
	if err != nil || !bytes.Equal(b, body) {
		t.Fatalf("fetch: %q, %v", b, err)
	}
}

func TestOfflineRecipientGetsEveryMessageOnceWhenBack(t *testing.T) {
	m, _ := newMail(t, 12, 20, 2)
	m.Crash(m.Users[1].Host)
	for i := 0; i < 5; i++ {
		if err := send(t, m, 0, []int{1}, []byte(fmt.Sprintf("message %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	// A retry of the last message by the client is the same message.
	if err := send(t, m, 0, []int{1}, []byte("message 4")); err != nil {
		t.Fatal(err)
	}
	if err := m.S.RunFor(3 * env.Hour); err != nil {
		t.Fatal(err)
	}
	m.S.Restart(m.Users[1].Host)
	awaitMail(t, m, "five messages", 20*time1m, func() bool { return len(inbox(m, 1)) >= 5 })
	if err := m.S.RunFor(10 * time1m); err != nil {
		t.Fatal(err)
	}
	if n := len(inbox(m, 1)); n != 5 {
		t.Fatalf("INBOX holds %d messages, want 5 exactly", n)
	}
}

func TestMailboxIsRebuiltOnAFreshDisk(t *testing.T) {
	m, hosts := newMail(t, 13, 20, 2)
	deliverToUser0(t, m, "m%d", 4)
	a := m.Account(0)
	in, _ := a.Folder("INBOX")
	arch, _ := a.Folder("Archive")
	uids := []uint32{in.Messages()[0].UID, in.Messages()[1].UID, in.Messages()[2].UID}
	step := func(what string, f func(done func(error))) { mailStep(t, m, what, f) }
	step("flag", func(d func(error)) { in.SetFlags(uids[:2], []string{`\Seen`, `\Flagged`}, true, d) })
	step("move", func(d func(error)) { in.Move(uids[2:3], arch, func(_ []uint32, err error) { d(err) }) })
	step("expunge", func(d func(error)) { in.Expunge(uids[1:2], d) })
	step("create", func(d func(error)) { a.CreateFolder("Projects", d) })
	want := describeMailbox(a)

	// The key backup is in the network, sealed with the recovery code.
	code := publishKeyBackup(t, m, 0)

	// The user's node is lost with its disk. Another node with an empty
	// disk fetches the backup and the certificate, opens the backup with
	// the code, and serves the user.
	recoverOnFreshNode(t, m, 0, hosts[10], code)
	if got := describeMailbox(m.Account(0)); got != want {
		t.Fatalf("rebuilt mailbox differs:\n got %s\nwant %s", got, want)
	}
}

// deliverToUser0 sends n messages (bodies format with their number) from
// user 1 to user 0, and waits until user 0's INBOX holds them all.
func deliverToUser0(t *testing.T, m *Mail, format string, n int) {
	t.Helper()
	for i := range n {
		if err := send(t, m, 1, []int{0}, []byte(fmt.Sprintf(format, i))); err != nil {
			t.Fatal(err)
		}
	}
	awaitMail(t, m, fmt.Sprintf("%d delivered", n), 10*time1m, func() bool { return len(inbox(m, 0)) == n })
}

// mailStep runs one asynchronous mailbox operation and fails the test if
// it fails.
func mailStep(t *testing.T, m *Mail, what string, f func(done func(error))) {
	t.Helper()
	if err := call(t, m, what, f); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// recoverOnFreshNode loses user u's node with its disk and serves the
// user from fresh, an empty node, with only what the network holds: the
// key backup opened with code, and the published certificate, which must
// certify the keys the backup restores.
func recoverOnFreshNode(t *testing.T, m *Mail, u int, fresh sim.HostID, code string) {
	t.Helper()
	step := func(what string, f func(done func(error))) { mailStep(t, m, what, f) }
	m.Crash(m.Users[u].Host)
	x := m.Post(fresh)
	var got []byte
	step("fetch key backup", func(d func(error)) {
		x.FetchKeyBackup(m.Users[u].Address, func(b []byte, err error) { got = b; d(err) })
	})
	keys, err := identity.OpenBackup(got, code)
	if err != nil {
		t.Fatal(err)
	}
	var cert *identity.UserCert
	step("fetch certificate", func(d func(error)) {
		x.FetchCert(m.Users[u].Address, func(c *identity.UserCert, err error) { cert = c; d(err) })
	})
	if !keys.Equal(m.Users[u].Keys) || !cert.Matches(keys) {
		t.Fatal("the network's key backup or certificate is not the user's latest")
	}
	m.Users[u].Host = fresh
	m.byHost[fresh] = append(m.byHost[fresh], u)
	if _, err := x.AddUser(keys, cert, nil); err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "mailbox loaded on the fresh node", 5*time1m, func() bool { a := m.Account(u); return a != nil && a.Ready() })
}

// publishKeyBackup seals user u's keys under a new recovery code,
// publishes the backup and returns the code.
func publishKeyBackup(t *testing.T, m *Mail, u int) string {
	t.Helper()
	code, err := identity.NewRecoveryCode(randReader{m.S.Rand()})
	if err != nil {
		t.Fatal(err)
	}
	backup, err := identity.SealBackup(m.Users[u].Keys, code, 10)
	if err != nil {
		t.Fatal(err)
	}
	mailStep(t, m, "publish key backup", func(d func(error)) { m.Account(u).PublishKeyBackup(backup, d) })
	return code
}

// mailboxContents maps "folder/uid" to the message's flags and body, for
// every message of user u.
func mailboxContents(t *testing.T, m *Mail, u int) map[string]string {
	t.Helper()
	out := map[string]string{}
	a := m.Account(u)
	for _, name := range a.Folders() {
		f, _ := a.Folder(name)
		for _, msg := range f.Messages() {
			b, err := fetch(t, m, u, name, msg.UID)
			if err != nil {
				t.Fatalf("fetch %s/%d: %v", name, msg.UID, err)
			}
			out[fmt.Sprintf("%s/%d", name, msg.UID)] = fmt.Sprintf("%v %s", msg.Flags, b)
		}
	}
	return out
}

func TestMailSurvivesAUserKeyRotation(t *testing.T) {
	m, hosts := newMail(t, 14, 20, 2)
	step := func(what string, f func(done func(error))) { mailStep(t, m, what, f) }
	deliverToUser0(t, m, "before %d", 3)
	a := m.Account(0)
	in, _ := a.Folder("INBOX")
	arch, _ := a.Folder("Archive")
	uids := []uint32{in.Messages()[0].UID, in.Messages()[1].UID}
	step("flag", func(d func(error)) { in.SetFlags(uids[:1], []string{`\Seen`}, true, d) })
	step("move", func(d func(error)) { in.Move(uids[1:], arch, func(_ []uint32, err error) { d(err) }) })
	step("create", func(d func(error)) { a.CreateFolder("Projects", d) })
	publishKeyBackup(t, m, 0)
	before := mailboxContents(t, m, 0)

	// A message arrives while the user's node is down: the sender seals
	// it to the only key published, the old one.
	m.Crash(m.Users[0].Host)
	late := []byte("sealed to the old key")
	if err := send(t, m, 1, []int{0}, late); err != nil {
		t.Fatal(err)
	}

	// The keys rotate, and the node comes back with only the new ones.
	rr := randReader{m.S.Rand()}
	keys, err := m.Users[0].Keys.Rotate(rr)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := m.CA.IssueUser(rr, keys.Address, keys.Signing.Public(), keys.Sealing.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	m.Users[0].Keys, m.Users[0].Cert = keys, cert
	m.S.Restart(m.Users[0].Host)
	awaitMail(t, m, "the old-key notification delivered", 10*time1m, func() bool { return len(inbox(m, 0)) == 3 })
	after := mailboxContents(t, m, 0)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s after the rotation: %q, want %q", k, after[k], v)
		}
	}
	if len(after) != len(before)+1 {
		t.Fatalf("%d messages after the rotation, want %d", len(after), len(before)+1)
	}

	// New writes and new mail, sealed to the new key.
	a = m.Account(0)
	in, _ = a.Folder("INBOX")
	step("flag after", func(d func(error)) { in.SetFlags([]uint32{in.Messages()[2].UID}, []string{`\Flagged`}, true, d) })
	step("create after", func(d func(error)) { a.CreateFolder("After", d) })
	if err := send(t, m, 1, []int{0}, []byte("after")); err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "new mail delivered", 10*time1m, func() bool { return len(inbox(m, 0)) == 4 })

	// The rotated backup replaces the old one in the network: a fresh
	// node restores every key pair and the whole mailbox from it.
	code := publishKeyBackup(t, m, 0)
	want := mailboxContents(t, m, 0)
	recoverOnFreshNode(t, m, 0, hosts[10], code)
	if got := mailboxContents(t, m, 0); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rebuilt mailbox differs:\n got %v\nwant %v", got, want)
	}
}

// describeMailbox prints folders, UIDs, UIDVALIDITY and flags.
func describeMailbox(a *post.Account) string {
	var b bytes.Buffer
	for _, name := range a.Folders() {
		f, _ := a.Folder(name)
		fmt.Fprintf(&b, "%s(%d):", name, f.UIDValidity())
		for _, msg := range f.Messages() {
			fmt.Fprintf(&b, " %d%v", msg.UID, msg.Flags)
		}
		b.WriteString("; ")
	}
	return b.String()
}

func TestStoringNodesLearnNoContent(t *testing.T) {
	m, _ := newMail(t, 14, 20, 2)
	marker := []byte("SECRET-MARKER-7f3a")
	if err := send(t, m, 0, []int{1}, append([]byte("Subject: "), marker...)); err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "delivered", 10*time1m, func() bool { return len(inbox(m, 1)) == 1 })
	for h, d := range m.disks {
		for _, kind := range []store.Kind{store.KindImmutable, store.KindMutable, store.KindSet} {
			keys, _, _ := d.Keys(kind, store.Range{}, nil, 1<<20)
			for _, k := range keys {
				b, err := d.Get(kind, k)
				if err == nil && (bytes.Contains(b, marker) || bytes.Contains(b, []byte("Subject"))) {
					t.Fatalf("host %d stores %v %s with plaintext in it", h, kind, k.Short())
				}
			}
		}
	}
}

func TestTamperingIsDetected(t *testing.T) {
	m, _ := newMail(t, 15, 20, 3)
	if err := send(t, m, 0, []int{1}, []byte("original")); err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "delivered", 10*time1m, func() bool { return len(inbox(m, 1)) == 1 })
	msg := inbox(m, 1)[0]
	// A body corrupted on every disk is never served as the message.
	for _, d := range m.disks {
		d.Corrupt(store.KindImmutable, msg.Body.Chunks[0])
	}
	if b, err := fetch(t, m, 1, "INBOX", msg.UID); err == nil {
		t.Fatalf("corrupted body read back as %q", b)
	}
	// Something that is not a notification signed by a member node is
	// refused by the replicas of the pending set.
	var err error
	done := false
	pk := post.PendingKey(m.Users[2].Cert.UserID)
	m.Past(m.Users[0].Host).SetAdd(pk, []byte("not a notification"), past.LeaseNotification, func(_ past.InsertResult, e error) { err, done = e, true })
	awaitMail(t, m, "forged add", time1m, func() bool { return done })
	if !errors.Is(err, past.ErrRefused) {
		t.Fatalf("a forged notification: %v, want ErrRefused", err)
	}
}

func TestNotificationFloodsAreLimited(t *testing.T) {
	m, _ := newMail(t, 16, 20, 3)
	// One node sends far more than the per-recipient burst at once.
	var refused, ok int
	for i := 0; i < 160; i++ {
		m.Post(m.Users[0].Host).Send(m.Users[0].Address, []string{m.Users[1].Address}, []byte(fmt.Sprintf("flood %d", i)), func(err error) {
			if errors.Is(err, past.ErrRefused) {
				refused++
			} else if err == nil {
				ok++
			}
		})
	}
	awaitMail(t, m, "flood answered", 10*time1m, func() bool { return refused+ok == 160 })
	if refused == 0 || ok > 110 {
		t.Fatalf("flood of 160: %d accepted, %d refused; want at most the burst accepted", ok, refused)
	}
	// Another sender still gets through to the same recipient.
	if err := send(t, m, 2, []int{1}, []byte("legitimate")); err != nil {
		t.Fatalf("another node's mail during the flood: %v", err)
	}
}

func TestMailFromSomeoneElseIsFlagged(t *testing.T) {
	m, _ := newMail(t, 17, 20, 2)
	honest := fmt.Sprintf("From: U Zero <%s>\r\nSubject: hi\r\n\r\nhello\r\n", m.Users[0].Address)
	forged := "From: The Bank <ceo@bank.example>\r\nSubject: urgent\r\n\r\npay now\r\n"
	for _, b := range []string{honest, forged} {
		if err := send(t, m, 0, []int{1}, []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	awaitMail(t, m, "both delivered", 10*time1m, func() bool { return len(inbox(m, 1)) == 2 })
	flagged := 0
	for _, msg := range inbox(m, 1) {
		b, err := fetch(t, m, 1, "INBOX", msg.UID)
		if err != nil {
			t.Fatal(err)
		}
		has := len(msg.Flags) == 1 && msg.Flags[0] == post.FlagSenderMismatch
		if has != (string(b) == forged) {
			t.Errorf("message %q has flags %v", b[:20], msg.Flags)
		}
		if has {
			flagged++
		}
	}
	if flagged != 1 {
		t.Fatalf("%d flagged, want the forged one", flagged)
	}
}

func TestGatewayMailIsStoredOnceAndNotFlagged(t *testing.T) {
	m := newGatewayMail(t, 18, 20, 4)
	spam := []byte("From: Prize Office <win@lottery.example>\r\nSubject: you won\r\n\r\nclick\r\n")
	inject := func(gw int, to []int) {
		var addrs []string
		for _, r := range to {
			addrs = append(addrs, m.Users[r].Address)
		}
		var err error
		done := false
		m.Post(m.Users[gw].Host).Inject(m.Users[gw].Address, addrs, spam, func(e error) { err, done = e, true })
		awaitMail(t, m, "inject", 2*time1m, func() bool { return done })
		if err != nil {
			t.Fatal(err)
		}
	}
	inject(0, []int{1})
	inject(0, []int{2}) // the same message to someone else: the body is stored once
	inject(3, []int{1}) // u3 is no gateway: its "gateway" mail is flagged
	awaitMail(t, m, "delivered", 10*time1m, func() bool { return len(inbox(m, 1)) == 2 && len(inbox(m, 2)) == 1 })
	a, b := inbox(m, 1), inbox(m, 2)
	if a[0].Body.Chunks[0] != b[0].Body.Chunks[0] {
		t.Fatal("the same injected message was stored twice")
	}
	flagged := 0
	for _, msg := range append(a, b...) {
		if len(msg.Flags) > 0 {
			flagged++
		}
	}
	if flagged != 1 {
		t.Fatalf("%d flagged, want only the one from a non-gateway", flagged)
	}
}

func TestOnlyOneNodeWritesAMailbox(t *testing.T) {
	m, hosts := newMail(t, 19, 20, 2)
	old := m.Account(0)
	// The user is restored on another node while the old one still runs.
	x := m.Post(hosts[12])
	fresh, err := x.AddUser(m.Users[0].Keys, m.Users[0].Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "fresh node ready", 5*time1m, func() bool { return fresh.Ready() })
	awaitMail(t, m, "old node stops writing", 5*time1m, func() bool { return old.Retired() })
	in, _ := old.Folder("INBOX")
	var werr error
	done := false
	in.Append([]byte("late write"), nil, 0, func(_ uint32, err error) { werr, done = err, true })
	awaitMail(t, m, "append answered", time1m, func() bool { return done })
	if !errors.Is(werr, post.ErrNotWriter) {
		t.Fatalf("a write on the old node: %v, want ErrNotWriter", werr)
	}
	// New mail goes to the node that took over.
	if err := send(t, m, 1, []int{0}, []byte("after the move")); err != nil {
		t.Fatal(err)
	}
	fin, _ := fresh.Folder("INBOX")
	awaitMail(t, m, "delivered on the new node", 10*time1m, func() bool { return len(fin.Messages()) == 1 })
}

func TestGatewayJunkIsFiledInJunk(t *testing.T) {
	m := newGatewayMail(t, 20, 12, 3)
	junk := []byte("From: x@spam.example\r\n" + post.JunkHeader + ": yes (score 9)\r\nSubject: buy\r\n\r\nnow\r\n")
	for _, from := range []int{0, 2} { // the gateway, then a member claiming the same
		var err error
		done := false
		m.Post(m.Users[from].Host).Inject(m.Users[from].Address, []string{m.Users[1].Address}, append(junk, byte('0'+from)), func(e error) { err, done = e, true })
		awaitMail(t, m, "inject", 2*time1m, func() bool { return done })
		if err != nil {
			t.Fatal(err)
		}
	}
	a := m.Account(1)
	j, _ := a.Folder("Junk")
	awaitMail(t, m, "delivered", 10*time1m, func() bool { return len(j.Messages())+len(inbox(m, 1)) == 2 })
	if len(j.Messages()) != 1 || len(inbox(m, 1)) != 1 {
		t.Fatalf("Junk %d, INBOX %d: want the gateway's junk in Junk and the member's in INBOX", len(j.Messages()), len(inbox(m, 1)))
	}
}

// newGatewayMail is newMail with u0 as the community's gateway user.
func newGatewayMail(t *testing.T, seed uint64, n, u int) *Mail {
	t.Helper()
	pc := testPostConfig()
	pc.Gateways = []string{"u0@test.epost"}
	m, _ := newMailWith(t, seed, n, u, pc)
	return m
}

// inboxByID maps user 0's INBOX on account a by message id.
func inboxByID(a *post.Account) map[[16]byte]*post.Message {
	in, _ := a.Folder("INBOX")
	out := map[[16]byte]*post.Message{}
	for _, m := range in.Messages() {
		out[m.ID] = m
	}
	return out
}

// TestForkMergeAfterTakeoverKeepsOldExpunges: a second node takes the
// mailbox over from the network and changes it; the first comes back
// with its own head, an ancestor of the network's: that is a fast
// forward, not a merge, so a message expunged before the takeover stays
// expunged and the other node's flag is kept.
func TestForkMergeAfterTakeoverKeepsOldExpunges(t *testing.T) {
	m, hosts := newMail(t, 13, 20, 2)
	deliverToUser0(t, m, "m%d", 3)
	a := m.Account(0)
	in, _ := a.Folder("INBOX")
	msgs := in.Messages()
	mailStep(t, m, "expunge", func(d func(error)) { in.Expunge([]uint32{msgs[0].UID}, d) })
	hA := m.Users[0].Host
	m.Crash(hA)
	b, err := m.Post(hosts[10]).AddUser(m.Users[0].Keys, m.Users[0].Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "B ready", 5*time1m, func() bool { return b.Ready() })
	bin, _ := b.Folder("INBOX")
	mailStep(t, m, "flag on B", func(d func(error)) { bin.SetFlags([]uint32{msgs[1].UID}, []string{`\Seen`}, true, d) })
	m.Crash(hosts[10])
	m.S.Restart(hA)
	awaitMail(t, m, "A back", 5*time1m, func() bool { a := m.Account(0); return a != nil && a.Ready() })
	// A serves its own cached mailbox at once, then reads forward to B's
	// head.
	awaitMail(t, m, "A caught up", 5*time1m, func() bool {
		g := inboxByID(m.Account(0))[msgs[1].ID]
		return g != nil && slices.Contains(g.Flags, `\Seen`)
	})
	got := inboxByID(m.Account(0))
	if _, back := got[msgs[0].ID]; back {
		t.Errorf("the message expunged before the takeover is back")
	}
	if g := got[msgs[1].ID]; g == nil || g.UID != msgs[1].UID || !slices.Contains(g.Flags, `\Seen`) {
		t.Errorf("message 2 is %+v, want UID %d flagged \\Seen by the other node", g, msgs[1].UID)
	}
	if n := m.Post(hA).Stats().ForksMerged; n != 0 {
		t.Errorf("%d forks merged; an ancestor head is a fast forward", n)
	}
}

// TestForkMergeKeepsBothSidesChanges: the first node stalls while a
// second takes the mailbox over and changes it, then writes on its own
// branch: a real fork. The merge keeps the expunge made before the fork,
// cancels the expunge only the second node made, applies both nodes'
// flags, keeps the UIDs, and survives a restart.
func TestForkMergeKeepsBothSidesChanges(t *testing.T) {
	t.Run("entries", func(t *testing.T) { forkMergeKeepsBothSidesChanges(t, testPostConfig()) })
	// With a checkpoint at every other entry, kept in one-message parts,
	// both branches and their fork point start from snapshots whose
	// messages are in parts: the merge must read them.
	t.Run("snapshot parts", func(t *testing.T) {
		pc := testPostConfig()
		pc.CheckpointEvery, pc.SnapshotChunk = 2, 1
		forkMergeKeepsBothSidesChanges(t, pc)
	})
}

func forkMergeKeepsBothSidesChanges(t *testing.T, pc post.Config) {
	m, hosts := newMailWith(t, 13, 20, 2, pc)
	deliverToUser0(t, m, "m%d", 4)
	a := m.Account(0)
	in, _ := a.Folder("INBOX")
	msgs := in.Messages()
	mailStep(t, m, "expunge before the fork", func(d func(error)) { in.Expunge([]uint32{msgs[0].UID}, d) })
	hA := m.Users[0].Host
	m.S.Pause(hA, 10*time1m)
	b, err := m.Post(hosts[10]).AddUser(m.Users[0].Keys, m.Users[0].Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "B ready", 5*time1m, func() bool { return b.Ready() })
	bin, _ := b.Folder("INBOX")
	mailStep(t, m, "flag on B", func(d func(error)) { bin.SetFlags([]uint32{msgs[1].UID}, []string{`\Seen`}, true, d) })
	mailStep(t, m, "expunge on B", func(d func(error)) { bin.Expunge([]uint32{msgs[2].UID}, d) })
	m.Crash(hosts[10])
	// A, stalled, still takes itself for the writer: its change goes on
	// its own branch, from the head before B's.
	var aerr error
	adone := false
	in.SetFlags([]uint32{msgs[2].UID, msgs[3].UID}, []string{`\Flagged`}, true, func(err error) { aerr, adone = err, true })
	awaitMail(t, m, "fork merged on A", 20*time1m, func() bool { return adone && m.Post(hA).Stats().ForksMerged > 0 })
	if aerr != nil {
		t.Fatalf("A's change: %v", aerr)
	}
	check := func(when string, got map[[16]byte]*post.Message) {
		t.Helper()
		if _, back := got[msgs[0].ID]; back {
			t.Errorf("%s: the message expunged before the fork is back", when)
		}
		// The test mail has no From: each message is also flagged $Phishing.
		ph := post.FlagSenderMismatch
		want := map[int][]string{1: {ph, `\Seen`}, 2: {ph, `\Flagged`}, 3: {ph, `\Flagged`}}
		for i, flags := range want {
			g := got[msgs[i].ID]
			if g == nil {
				t.Errorf("%s: message %d lost", when, i)
				continue
			}
			if g.UID != msgs[i].UID || !slices.Equal(g.Flags, flags) {
				t.Errorf("%s: message %d is UID %d %v, want UID %d %v", when, i, g.UID, g.Flags, msgs[i].UID, flags)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d messages, want %d", when, len(got), len(want))
		}
	}
	check("after the merge", inboxByID(a))
	if n := m.Post(hA).Stats().ForksMerged; n != 1 {
		t.Errorf("%d forks merged, want 1", n)
	}
	m.Crash(hA)
	m.S.Restart(hA)
	awaitMail(t, m, "A back", 5*time1m, func() bool { a := m.Account(0); return a != nil && a.Ready() })
	check("after a restart", inboxByID(m.Account(0)))
}

// TestRootRecordKeepsSubscriptionsAndArchive: subscriptions and the
// archive slot live in the user's root record: they survive a restart
// and a fresh node that loads the mailbox from the network sees them; an
// archive root not newer than the recorded one changes nothing.
func TestRootRecordKeepsSubscriptionsAndArchive(t *testing.T) {
	m, hosts := newMail(t, 21, 16, 1)
	a := m.Account(0)
	mailStep(t, m, "unsubscribe", func(d func(error)) { a.SetSubscribed("Junk", false, d) })
	arc := post.ArchiveRoot{Seq: 4, Manifest: [32]byte{7}}
	mailStep(t, m, "archive root", func(d func(error)) { a.SetArchiveRoot(arc, d) })
	mailStep(t, m, "older archive root", func(d func(error)) { a.SetArchiveRoot(post.ArchiveRoot{Seq: 3, Manifest: [32]byte{1}}, d) })
	if err := call(t, m, "missing folder", func(d func(error)) { a.SetSubscribed("Nope", true, d) }); !errors.Is(err, post.ErrNoFolder) {
		t.Fatalf("subscribing to a missing folder: %v, want ErrNoFolder", err)
	}
	want := []string{"Archive", "Drafts", "INBOX", "Sent", "Trash"}
	check := func(when string, a *post.Account) {
		t.Helper()
		if got := a.Subscriptions(); !slices.Equal(got, want) {
			t.Errorf("%s: subscriptions %v, want %v", when, got, want)
		}
		if a.Subscribed("Junk") || !a.Subscribed("INBOX") {
			t.Errorf("%s: Junk subscribed %v, INBOX %v", when, a.Subscribed("Junk"), a.Subscribed("INBOX"))
		}
		if got := a.ArchiveRoot(); got != arc {
			t.Errorf("%s: archive root %+v, want %+v", when, got, arc)
		}
	}
	check("at once", a)
	h := m.Users[0].Host
	m.Crash(h)
	m.S.Restart(h)
	awaitMail(t, m, "back", 5*time1m, func() bool { a := m.Account(0); return a != nil && a.Ready() })
	check("after a restart", m.Account(0))
	b, err := m.Post(hosts[9]).AddUser(m.Users[0].Keys, m.Users[0].Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "loaded on a fresh node", 5*time1m, func() bool { return b.Ready() })
	check("on a fresh node", b)
}

// redirected is user 0's notification for user 2, with user 1 written
// into its recipient list after signing (the signature covers the list)
// and sealed to user 1 by user 0's node: what a node would store to
// redirect mail. The storing replicas cannot tell; user 1 can.
func redirected(t *testing.T, m *Mail) []byte {
	t.Helper()
	r := randReader{m.S.Rand()}
	key, err := post.NewContentKey(r)
	if err != nil {
		t.Fatal(err)
	}
	_, ref := post.SealBody(key, []byte("for user 2 only"), post.ChunkSize)
	u0, u1 := m.Users[0], m.Users[1]
	n, err := post.SignNotification(r, u0.Keys, u0.Cert, []string{m.Users[2].Address}, ref, false)
	if err != nil {
		t.Fatal(err)
	}
	n.Recipients = []string{u1.Address}
	s, err := post.Seal(r, n, u1.Cert, m.keys[u0.Host], m.certs[u0.Host])
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	done := false
	m.Past(u0.Host).SetAdd(post.PendingKey(u1.Cert.UserID), s.Encode(), past.LeaseNotification, func(_ past.InsertResult, e error) { serr, done = e, true })
	awaitMail(t, m, "redirected notification stored", time1m, func() bool { return done })
	if serr != nil {
		t.Fatalf("storing the redirected notification: %v", serr)
	}
	return s.Encode()
}

// pendingHolds reports whether user u's pending set holds member.
func pendingHolds(t *testing.T, m *Mail, u int, member []byte) bool {
	t.Helper()
	var got [][]byte
	done := false
	m.Past(m.Users[0].Host).LookupSet(post.PendingKey(m.Users[u].Cert.UserID), func(ms [][]byte, err error) { got, done = ms, true })
	awaitMail(t, m, "pending set read", time1m, func() bool { return done })
	return slices.ContainsFunc(got, func(b []byte) bool { return bytes.Equal(b, member) })
}

// TestRejectedNotificationIsCountedOnceAndReleased: a notification
// re-sealed to someone outside its signed recipient list is rejected,
// counted once in Stats.Forged however many polls see it, and released
// by the recipient so that it does not hold a place in its queue; with
// KeepRejected it stays pending and is still counted once.
func TestRejectedNotificationIsCountedOnceAndReleased(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			pc := testPostConfig()
			pc.KeepRejected = keep
			m, _ := newMailWith(t, 23, 16, 3, pc)
			x := m.Post(m.Users[1].Host)
			before := x.Stats()
			member := redirected(t, m)
			// Five polls (PollPeriod is a minute here), and the pushes.
			if err := m.S.RunFor(5*time1m + 30*env.Second); err != nil {
				t.Fatal(err)
			}
			after := x.Stats()
			if n := after.Forged - before.Forged; n != 1 {
				t.Fatalf("Forged rose by %d over five polls, want exactly 1", n)
			}
			if after.Delivered != before.Delivered || len(inbox(m, 1)) != 0 {
				t.Fatalf("the redirected message was delivered")
			}
			if held := pendingHolds(t, m, 1, member); held != keep {
				t.Fatalf("pending set holds the rejected notification: %v, want %v", held, keep)
			}
		})
	}
}

// TestPushDeliversWithoutPolling: with polls a week apart, mail reaches
// an online recipient through the watch on its pending set alone.
func TestPushDeliversWithoutPolling(t *testing.T) {
	pc := testPostConfig()
	pc.PollPeriod = 7 * 24 * env.Hour
	m, _ := newMailWith(t, 24, 16, 2, pc)
	// The only poll so far ran when the mailbox was loaded, before this.
	for i := range 3 {
		if err := send(t, m, 0, []int{1}, []byte(fmt.Sprintf("pushed %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	awaitMail(t, m, "pushed mail delivered", 5*time1m, func() bool { return len(inbox(m, 1)) == 3 })
}

// headOnDisks returns the bytes of a mutable object on every disk that
// holds it.
func headOnDisks(m *Mail, key store.Key) map[int][]byte {
	out := map[int][]byte{}
	for h, d := range m.disks {
		if b, err := d.Get(store.KindMutable, key); err == nil {
			out[h] = b
		}
	}
	return out
}

// putOnDisk writes raw bytes into a disk, as a restored backup would.
func putOnDisk(t *testing.T, m *Mail, h int, kind store.Kind, key store.Key, b []byte) {
	t.Helper()
	var err error
	done := false
	m.disks[h].PutAsync(kind, key, b, m.S.Now().Add(past.LeaseMailbox), func(e error) { err, done = e, true })
	awaitMail(t, m, "disk write", time1m, func() bool { return done })
	if err != nil {
		t.Fatal(err)
	}
}

// TestRolledBackFolderHeadIsRefused: replicas that went back to an old
// head (restored from a backup) do not roll the folder back. A reader
// takes the highest version any replica holds; where every replica is
// rolled back, the owner's node keeps its own head and puts it back.
func TestRolledBackFolderHeadIsRefused(t *testing.T) {
	m, hosts := newMail(t, 25, 16, 2)
	deliverToUser0(t, m, "early %d", 2)
	in, _ := m.Account(0).Folder("INBOX")
	key := in.HeadKey()
	old := headOnDisks(m, key)
	if len(old) == 0 {
		t.Fatal("no disk holds the INBOX head")
	}
	for i := 2; i < 4; i++ {
		if err := send(t, m, 1, []int{0}, []byte(fmt.Sprintf("late %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	awaitMail(t, m, "4 delivered", 10*time1m, func() bool { return len(inbox(m, 0)) == 4 })
	// Every replica but one goes back: a fresh node still reads all 4.
	kept := -1
	for h, b := range old {
		if kept < 0 {
			kept = h
			continue
		}
		putOnDisk(t, m, h, store.KindMutable, key, b)
	}
	fresh, err := m.Post(hosts[12]).AddUser(m.Users[0].Keys, m.Users[0].Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "fresh node ready", 5*time1m, func() bool { return fresh.Ready() })
	if fin, _ := fresh.Folder("INBOX"); len(fin.Messages()) != 4 {
		t.Fatalf("a fresh node reads %d messages past rolled-back replicas, want 4", len(fin.Messages()))
	}
	m.Crash(hosts[12])
	// Every replica goes back, and the owner's node restarts: its own
	// head holds, and the replicas get it back.
	for h, b := range old {
		putOnDisk(t, m, h, store.KindMutable, key, b)
	}
	hA := m.Users[0].Host
	m.Crash(hA)
	m.S.Restart(hA)
	awaitMail(t, m, "owner back", 5*time1m, func() bool { a := m.Account(0); return a != nil && a.Ready() })
	if n := len(inbox(m, 0)); n != 4 {
		t.Fatalf("the owner's node reads %d messages after the rollback, want 4", n)
	}
	awaitMail(t, m, "the newest head back in the network", 5*time1m, func() bool {
		back := 0
		for h, b := range headOnDisks(m, key) {
			if !bytes.Equal(b, old[h]) {
				back++
			}
		}
		return back >= len(old)/2+1
	})
}

// TestTamperedFolderLogIsDetected: a head corrupted on its replicas is
// passed over for a valid copy, and a log entry corrupted on every disk
// is never read as the folder: a node loading the mailbox fails and
// retries rather than serve something else.
func TestTamperedFolderLogIsDetected(t *testing.T) {
	m, hosts := newMail(t, 26, 16, 2)
	deliverToUser0(t, m, "m%d", 3)
	in, _ := m.Account(0).Folder("INBOX")
	key := in.HeadKey()
	copies := headOnDisks(m, key)
	corrupted := 0
	// Holders that serve a tampered head (a flipped bit their own store's
	// checksum does not catch: they wrote it so) to every reader.
	for h, b := range copies {
		if corrupted == len(copies)-1 {
			break
		}
		bad := bytes.Clone(b)
		bad[len(bad)-1] ^= 1
		putOnDisk(t, m, h, store.KindMutable, key, bad)
		corrupted++
	}
	bad := m.TotalPastStats().BadObjects
	b, err := m.Post(hosts[12]).AddUser(m.Users[0].Keys, m.Users[0].Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "fresh node ready", 5*time1m, func() bool { return b.Ready() })
	if bin, _ := b.Folder("INBOX"); len(bin.Messages()) != 3 {
		t.Fatalf("read %d messages past tampered heads, want 3", len(bin.Messages()))
	}
	if m.TotalPastStats().BadObjects == bad {
		t.Error("no tampered head was noticed")
	}
	m.Crash(hosts[12])
	// The newest entry, corrupted on every disk.
	var h struct {
		_    struct{} `cbor:",toarray"`
		Last [32]byte
		Seq  uint64
	}
	var res past.MutableResult
	done := false
	m.Past(hosts[3]).LookupMutable(key, func(r past.MutableResult, e error) { res, err, done = r, e, true })
	awaitMail(t, m, "head read", time1m, func() bool { return done })
	if err != nil || wire.Unmarshal(res.Versions[0].Data, &h) != nil {
		t.Fatalf("reading the head: %v", err)
	}
	for _, d := range m.disks {
		d.Corrupt(store.KindImmutable, h.Last)
	}
	c, err := m.Post(hosts[13]).AddUser(m.Users[0].Keys, m.Users[0].Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.S.RunFor(10 * time1m); err != nil {
		t.Fatal(err)
	}
	if c.Ready() {
		cin, _ := c.Folder("INBOX")
		t.Fatalf("a node loaded the mailbox past a tampered entry: %d messages", len(cin.Messages()))
	}
	if m.Post(hosts[13]).Stats().LoadFailures == 0 {
		t.Error("no load failure counted")
	}
}

// TestRootRecordBranchesMerge: a node creates a folder and files a
// message in it, then every replica of the root record goes back to the
// version before (restored from an old backup). A second node takes the
// mailbox over from that old root, creates a folder and renames one.
// When the first node comes back, neither branch's changes are lost:
// both new folders (with the message) and the rename are in the merged
// root record.
func TestRootRecordBranchesMerge(t *testing.T) {
	m, hosts := newMail(t, 27, 16, 1)
	a := m.Account(0)
	rootKey := past.MutableKey(m.Users[0].Cert.UserID, "root")
	old := headOnDisks(m, rootKey)
	mailStep(t, m, "create on A", func(d func(error)) { a.CreateFolder("From A", d) })
	fa, _ := a.Folder("From A")
	mailStep(t, m, "append on A", func(d func(error)) {
		fa.Append([]byte("Subject: filed on A\r\n\r\nkept\r\n"), nil, 0, func(_ uint32, err error) { d(err) })
	})
	hA := m.Users[0].Host
	m.Crash(hA)
	for h, b := range old {
		putOnDisk(t, m, h, store.KindMutable, rootKey, b)
	}
	b, err := m.Post(hosts[10]).AddUser(m.Users[0].Keys, m.Users[0].Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "B ready", 5*time1m, func() bool { return b.Ready() })
	if _, ok := b.Folder("From A"); ok {
		t.Fatal("the rollback of the root did not happen")
	}
	mailStep(t, m, "create on B", func(d func(error)) { b.CreateFolder("From B", d) })
	mailStep(t, m, "rename on B", func(d func(error)) { b.RenameFolder("Drafts", "Brouillons", d) })
	m.Crash(hosts[10])
	m.S.Restart(hA)
	awaitMail(t, m, "A back", 5*time1m, func() bool { a := m.Account(0); return a != nil && a.Ready() })
	// A serves its own cached mailbox at once, then finds B's branch of
	// the root and merges.
	awaitMail(t, m, "root merged on A", 5*time1m, func() bool { return m.Post(hA).Stats().ForksMerged > 0 })
	a = m.Account(0)
	got := a.Folders()
	for _, want := range []string{"From A", "From B", "Brouillons", "INBOX"} {
		if !slices.Contains(got, want) {
			t.Errorf("folders %v lack %q", got, want)
		}
	}
	if slices.Contains(got, "Drafts") {
		t.Errorf("folders %v: the rename on B is lost", got)
	}
	if f, ok := a.Folder("From A"); !ok || len(f.Messages()) != 1 {
		t.Errorf("the message filed on A is not in its folder")
	}
	if n := m.Post(hA).Stats().ForksMerged; n != 1 {
		t.Errorf("%d forks merged, want 1 (the root)", n)
	}
}
