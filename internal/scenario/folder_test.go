package scenario

import (
	"fmt"
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/post"
	"github.com/epost-mail/epost/internal/sim"
)

// TestFolderFarBeyondTheObjectLimit: a folder whose snapshot is many
// times PAST's object limit keeps taking writes (checkpoints split into
// parts; unchanged parts are reused, not rewritten), and a node that
// never served the user opens it whole, flags and expunges included.
// The limit is made small so the folder need not be big.
func TestFolderFarBeyondTheObjectLimit(t *testing.T) {
	pastCfg := testPastConfig()
	pastCfg.MaxObjectSize = 16 << 10
	pc := testPostConfig()
	pc.CheckpointEvery = 4
	pc.SnapshotChunk = 64 // about 7 KB a part
	sc := sim.DefaultConfig(31)
	sc.InvariantEvery = 0
	m, err := NewMail(sc, overlay.SimConfig(), pastCfg, pc)
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := m.BuildStorage(16, 200*env.Millisecond, 2*env.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.AddUser("big@test.epost", hosts[0]); err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "mailbox loaded", 5*time1m, func() bool { a := m.Account(0); return a != nil && a.Ready() })
	in, _ := m.Account(0).Folder("INBOX")
	const batches, per = 40, 40 // 1,600 messages: a snapshot of about 170 KB
	for b := 0; b < batches; b++ {
		left := per
		for i := 0; i < per; i++ {
			ref := post.BodyRef{Size: int64(1000 + b*per + i)}
			in.AppendStored(ref, nil, int64(b*per+i), func(_ uint32, err error) {
				if err != nil {
					t.Fatalf("append in batch %d: %v", b, err)
				}
				left--
			})
		}
		awaitMail(t, m, fmt.Sprintf("batch %d", b), time1m, func() bool { return left == 0 })
		if b == batches/2 {
			// Change early messages: their parts are rewritten, the others kept.
			uids := []uint32{in.Messages()[3].UID, in.Messages()[100].UID}
			mailStep(t, m, "flag", func(d func(error)) { in.SetFlags(uids, []string{`\Seen`}, true, d) })
			mailStep(t, m, "expunge", func(d func(error)) { in.Expunge([]uint32{in.Messages()[5].UID}, d) })
		}
	}
	want := batches*per - 1
	if n := len(in.Messages()); n != want {
		t.Fatalf("INBOX holds %d messages, want %d", n, want)
	}
	st := m.Post(hosts[0]).Stats()
	if st.SnapshotPartsReused == 0 || st.SnapshotParts > uint64(2*want/pc.SnapshotChunk+20) {
		t.Fatalf("checkpoints wrote %d parts and reused %d: unchanged parts are not reused", st.SnapshotParts, st.SnapshotPartsReused)
	}
	t.Logf("%d checkpoint parts written, %d reused", st.SnapshotParts, st.SnapshotPartsReused)
	// The node's cache holds the log back to the last checkpoint: its
	// parts and at most a checkpoint's worth of entries.
	if n, max := len(m.caches[hosts[0]]), want/pc.SnapshotChunk+1+int(2*pc.CheckpointEvery); n > max {
		t.Fatalf("the folder cache holds %d objects, want at most %d", n, max)
	}
	wantDesc := describeFolder(in)

	// A node that never served the user opens the folder from the network.
	h := hosts[9]
	fresh := post.New(pc, m.Post(h).Env(), m.Past(h), post.Node{Key: m.keys[h], Cert: m.certs[h], Verifier: m.Verifier}, memMeta{})
	acct, err := fresh.AddUser(m.Users[0].Keys, m.Users[0].Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "opened on a fresh node", 5*time1m, func() bool { return acct.Ready() })
	fin, _ := acct.Folder("INBOX")
	if got := describeFolder(fin); got != wantDesc {
		t.Fatalf("the fresh node's INBOX differs:\n got %.300s\nwant %.300s", got, wantDesc)
	}
	// And it keeps writing to it.
	mailStep(t, m, "append on the fresh node", func(d func(error)) {
		fin.AppendStored(post.BodyRef{Size: 1}, nil, 0, func(_ uint32, err error) { d(err) })
	})
	if n := len(fin.Messages()); n != want+1 {
		t.Fatalf("%d messages after one more, want %d", n, want+1)
	}
}

// describeFolder lists a folder's messages: UID, id, flags, size.
func describeFolder(f *post.Folder) string {
	s := fmt.Sprintf("next %d:", f.UIDNext())
	for _, m := range f.Messages() {
		s += fmt.Sprintf(" %d/%x/%v/%d", m.UID, m.ID[:4], m.Flags, m.Body.Size)
	}
	return s
}

// TestRestartCutOffServesFromTheCache: a node restarted while it reaches
// no other node serves its user's mailbox at once from its own head and
// folder cache (DESIGN.md section 6: serving a folder never waits on the
// network); once the network is back, mail sent meanwhile arrives and
// nothing is lost.
func TestRestartCutOffServesFromTheCache(t *testing.T) {
	m, _ := newMail(t, 33, 16, 2)
	deliverToUser0(t, m, "before %d", 5)
	a := m.Account(0)
	in, _ := a.Folder("INBOX")
	mailStep(t, m, "flag", func(d func(error)) { in.SetFlags([]uint32{in.Messages()[1].UID}, []string{`\Seen`}, true, d) })
	mailStep(t, m, "create", func(d func(error)) { a.CreateFolder("Projects", d) })
	proj, _ := a.Folder("Projects")
	mailStep(t, m, "append", func(d func(error)) {
		proj.Append([]byte("Subject: plan\r\n\r\nkept\r\n"), nil, 0, func(_ uint32, err error) { d(err) })
	})
	want := describeMailbox(a)

	h := m.Users[0].Host
	m.Crash(h)
	m.S.Partition([]sim.HostID{h})
	m.S.Restart(h)
	// At once: the mailbox is served before anything could come back
	// from the network (there is none).
	if err := m.S.RunFor(env.Millisecond); err != nil {
		t.Fatal(err)
	}
	a = m.Account(0)
	if a == nil || !a.Ready() {
		t.Fatal("the mailbox is not served at once after a restart without the network")
	}
	if got := describeMailbox(a); got != want {
		t.Fatalf("served from the cache:\n got %s\nwant %s", got, want)
	}
	if m.Post(h).Stats().CachedLoads == 0 {
		t.Fatal("no folder was opened from the cache")
	}
	// It stays served while the node is cut off.
	if err := m.S.RunFor(10 * time1m); err != nil {
		t.Fatal(err)
	}
	if got := describeMailbox(m.Account(0)); got != want {
		t.Fatalf("after ten minutes cut off:\n got %s\nwant %s", got, want)
	}
	// Mail sent meanwhile waits in the network, then arrives.
	if err := send(t, m, 1, []int{0}, []byte("while cut off")); err != nil {
		t.Fatal(err)
	}
	m.S.Heal()
	awaitMail(t, m, "mail sent while cut off arrives", 20*time1m, func() bool { return len(inbox(m, 0)) == 6 })
	proj, _ = m.Account(0).Folder("Projects") // the restarted node's
	mailStep(t, m, "append after the network is back", func(d func(error)) {
		proj.Append([]byte("Subject: more\r\n\r\nlater\r\n"), nil, 0, func(_ uint32, err error) { d(err) })
	})
	got := mailboxContents(t, m, 0)
	for _, k := range []string{"INBOX/1", "INBOX/2", "INBOX/5", "INBOX/6", "Projects/1", "Projects/2"} {
		if _, ok := got[k]; !ok {
			t.Fatalf("%s missing after the network is back: %v", k, got)
		}
	}
}

// TestCachedMailboxCatchesUpWithTheNetwork: a node restarted with a cache
// older than the network (another node served the user meanwhile and
// took mail in) serves the cache at once, then reads forward to what the
// network holds.
func TestCachedMailboxCatchesUpWithTheNetwork(t *testing.T) {
	m, hosts := newMail(t, 34, 16, 2)
	deliverToUser0(t, m, "first %d", 3)
	h := m.Users[0].Host
	m.Crash(h)
	// Another node serves the user and takes mail in.
	other := hosts[9]
	m.Users[0].Host = other
	m.byHost[other] = append(m.byHost[other], 0)
	if _, err := m.Post(other).AddUser(m.Users[0].Keys, m.Users[0].Cert, nil); err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "served elsewhere", 5*time1m, func() bool { a := m.Account(0); return a != nil && a.Ready() })
	if err := send(t, m, 1, []int{0}, []byte("taken in elsewhere")); err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "delivered elsewhere", 10*time1m, func() bool { return len(inbox(m, 0)) == 4 })
	m.Crash(other)
	m.byHost[other] = m.byHost[other][:len(m.byHost[other])-1]

	// The first node comes back with its old cache.
	m.Users[0].Host = h
	m.S.Restart(h)
	if err := m.S.RunFor(env.Millisecond); err != nil {
		t.Fatal(err)
	}
	if a := m.Account(0); a == nil || !a.Ready() || len(inbox(m, 0)) != 3 {
		t.Fatalf("not served at once from the cache (%d messages)", len(inbox(m, 0)))
	}
	awaitMail(t, m, "caught up with the network", 10*time1m, func() bool { return len(inbox(m, 0)) == 4 })
	if err := send(t, m, 1, []int{0}, []byte("after")); err != nil {
		t.Fatal(err)
	}
	awaitMail(t, m, "new mail", 10*time1m, func() bool { return len(inbox(m, 0)) == 5 })
}
