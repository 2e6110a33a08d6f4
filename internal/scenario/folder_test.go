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
