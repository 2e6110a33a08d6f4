package node

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/glacier"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/store"
)

// wipePast deletes every PAST object (immutable, mutable, set) from a
// stopped node's store, keeping its archive fragments: the disaster in
// which every replica of the mail is gone.
func wipePast(t *testing.T, dataDir string) int {
	t.Helper()
	st, err := store.Open(filepath.Join(dataDir, "store.db"), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := 0
	for _, kind := range []store.Kind{store.KindImmutable, store.KindMutable, store.KindSet} {
		for {
			keys, _, err := st.Keys(kind, store.Range{}, nil, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) == 0 {
				break
			}
			for _, k := range keys {
				if err := st.Delete(kind, k); err != nil {
					t.Fatal(err)
				}
				n++
			}
		}
	}
	return n
}

// serveUser has node nd serve the user and waits until the mailbox is
// loaded.
func serveUser(t *testing.T, nd *Node, keys identity.UserKeys, cert *identity.UserCert) {
	t.Helper()
	if err := nd.AddUser(keys, cert, 90*time.Second); err != nil {
		t.Fatal(err)
	}
}

// inboxSize is how many messages addr's INBOX holds on nd.
func inboxSize(nd *Node, addr string) int {
	k := 0
	nd.Do(func() {
		if a := nd.Mail().User(addr); a != nil {
			if f, ok := a.Folder("INBOX"); ok {
				k = len(f.Messages())
			}
		}
	})
	return k
}

// archiveSettled: everything nd's mailboxes need is archived, queues
// empty and no bundle still being placed.
func archiveSettled(nd *Node) bool {
	s := nd.Status().Storage
	return s != nil && s.ArchiveQueued == 0 && s.ArchivePlacing == 0 && s.ArchivedBundles > 0
}

// checkInbox fails unless addr's INBOX on nd holds exactly the bodies
// want, byte for byte, in any order.
func checkInbox(t *testing.T, nd *Node, addr string, want [][]byte) {
	t.Helper()
	if got := inboxSize(nd, addr); got != len(want) {
		t.Fatalf("%s: INBOX has %d messages, want %d", addr, got, len(want))
	}
	var mu sync.Mutex
	var bodies [][]byte
	var errs []error
	nd.Do(func() {
		f, _ := nd.Mail().User(addr).Folder("INBOX")
		ms := f.Messages()
		bodies = make([][]byte, len(ms))
		for i, m := range ms {
			f.Fetch(m.UID, func(b []byte, err error) {
				mu.Lock()
				defer mu.Unlock()
				bodies[i] = b
				if err != nil {
					errs = append(errs, err)
				}
			})
		}
	})
	waitFor(t, "bodies of "+addr, 2*time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		if len(errs) > 0 {
			return true
		}
		for _, b := range bodies {
			if b == nil {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("%s: reading a body: %v", addr, errs[0])
	}
	seen := map[string]int{}
	for _, b := range want {
		seen[string(b)]++
	}
	for _, b := range bodies {
		seen[string(b)]--
	}
	for b, k := range seen {
		if k != 0 {
			t.Fatalf("%s: message %.40q found %d times too few", addr, b, k)
		}
	}
}

// disaster stops every node in from..n, wipes every PAST object they hold
// (their archive fragments stay), and starts them again.
func (r *storageRing) disaster(t *testing.T, from int) {
	t.Helper()
	wiped := 0
	for i := from; i < len(r.nodes); i++ {
		r.stop(i)
		wiped += wipePast(t, r.cfgs[i].DataDir)
	}
	if wiped == 0 {
		t.Fatal("the survivors held no PAST objects to lose")
	}
	for i := from; i < len(r.nodes); i++ {
		r.start(i)
	}
	waitFor(t, "survivors settled", 90*time.Second, r.settled)
}

// recoverArchive rebuilds the users' mailbox data on nd from the archive,
// all at once.
func recoverArchive(t *testing.T, nd *Node, certs ...*identity.UserCert) {
	t.Helper()
	type outcome struct {
		addr string
		n    int
		err  error
	}
	got := make(chan outcome, len(certs))
	if err := nd.Do(func() {
		for _, c := range certs {
			nd.RecoverArchive(c.UserID, func(k int, err error) { got <- outcome{c.Address, k, err} })
		}
	}); err != nil {
		t.Fatal(err)
	}
	for range certs {
		select {
		case o := <-got:
			if o.err != nil || o.n == 0 {
				t.Fatalf("recover %s: %d objects, %v", o.addr, o.n, o.err)
			}
			t.Logf("%s: %d objects restored from the archive", o.addr, o.n)
		case <-time.After(5 * time.Minute):
			t.Fatal("recovery: no answer")
		}
	}
}

// newArchiveRing starts n real nodes that archive quickly, and waits
// until every node knows every other.
func newArchiveRing(t *testing.T, n int) *storageRing {
	gcfg := glacier.ConfigFor(n)
	gcfg.ArchiveDelay = 5 * env.Second
	gcfg.StoreTimeout = 30 * env.Second
	gcfg.FetchTimeout = 10 * env.Second
	r := newStorageRingWith(t, n, func(c *Config) {
		c.Glacier, c.Community = gcfg, n
		// A leaf set that holds the whole ring, as settled expects.
		c.Overlay = testOverlayConfig(24)
	})
	waitFor(t, "ring settled", 90*time.Second, r.settled)
	return r
}

// TestArchiveRebuildsMailboxesAfterDisaster: three users on 12 real nodes
// exchange 200 messages, which are archived. Then 7 of the 12 nodes (58%,
// the users' own among them) are gone for good and the 5 survivors lose
// every PAST object they held. From the survivors' archive fragments
// alone, every user's mailbox is rebuilt on a survivor: every message,
// byte for byte.
func TestArchiveRebuildsMailboxesAfterDisaster(t *testing.T) {
	const n, killed, msgs = 12, 7, 200
	r := newArchiveRing(t, n)

	type user struct {
		keys identity.UserKeys
		cert *identity.UserCert
		node int
	}
	src := &seq{n: 7000}
	var users []user
	for i, addr := range []string{"ann@dr.epost", "ben@dr.epost", "cat@dr.epost"} {
		keys, cert, err := r.ca.NewUser(src, addr)
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, user{keys, cert, i})
		serveUser(t, r.nodes[i], keys, cert)
	}

	// 200 messages, each user writing to the next.
	want := map[string][][]byte{}
	results := make(chan error, msgs)
	for i := range msgs {
		from, to := users[i%3], users[(i+1)%3]
		body := []byte(fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: message %d\r\n\r\nbody of message %d\r\n%s\r\n",
			from.keys.Address, to.keys.Address, i, i, bytes.Repeat([]byte{'a' + byte(i%26)}, 100+i*10)))
		want[to.keys.Address] = append(want[to.keys.Address], body)
		nd := r.nodes[from.node]
		if !nd.Post(func() {
			nd.Mail().Send(from.keys.Address, []string{to.keys.Address}, body, func(err error) { results <- err })
		}) {
			t.Fatal("node stopped")
		}
	}
	for range msgs {
		if err := <-results; err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	for _, u := range users {
		waitFor(t, "every message delivered to "+u.keys.Address, 3*time.Minute, func() bool {
			return inboxSize(r.nodes[u.node], u.keys.Address) == len(want[u.keys.Address])
		})
	}
	for _, u := range users {
		waitFor(t, "archive of "+u.keys.Address+" settled", 3*time.Minute, func() bool { return archiveSettled(r.nodes[u.node]) })
	}

	// The disaster.
	for i := range killed {
		r.stop(i)
	}
	r.disaster(t, killed)

	// Recovery on a survivor, from the archive alone, for all three users
	// at once.
	rec := r.nodes[killed]
	recoverArchive(t, rec, users[0].cert, users[1].cert, users[2].cert)
	for _, u := range users {
		serveUser(t, rec, u.keys, u.cert)
		checkInbox(t, rec, u.keys.Address, want[u.keys.Address])
	}
}

// TestArchiveRebuildsARotatedMailbox: a user's keys rotate between two
// batches of mail, and a message sealed to the old key waits while the
// user's node is down. The node comes back with the rotated keys alone
// and takes it in. Then every PAST object is lost, and the archive, its
// bundles signed by either key, rebuilds the whole mailbox on another
// node.
func TestArchiveRebuildsARotatedMailbox(t *testing.T) {
	r := newArchiveRing(t, 6)
	src := &seq{n: 9000}
	newCert := func(keys identity.UserKeys) *identity.UserCert {
		cert, err := r.ca.IssueUser(src, keys.Address, keys.Signing.Public(), keys.Sealing.Recipient())
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	ann, err := identity.GenerateUserKeys(src, "ann@rot.epost")
	if err != nil {
		t.Fatal(err)
	}
	ben, err := identity.GenerateUserKeys(src, "ben@rot.epost")
	if err != nil {
		t.Fatal(err)
	}
	serveUser(t, r.nodes[0], ann, newCert(ann))
	serveUser(t, r.nodes[1], ben, newCert(ben))
	var want [][]byte
	send := func(i int) {
		body := []byte(fmt.Sprintf("From: %s\r\nSubject: %d\r\n\r\nmessage %d\r\n", ben.Address, i, i))
		want = append(want, body)
		sent := make(chan error, 1)
		nd := r.nodes[1]
		nd.Post(func() { nd.Mail().Send(ben.Address, []string{ann.Address}, body, func(err error) { sent <- err }) })
		if err := <-sent; err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	for i := range 3 {
		send(i)
	}
	waitFor(t, "first mail delivered", 3*time.Minute, func() bool { return inboxSize(r.nodes[0], ann.Address) == 3 })
	// Archived under the old key before the node stops (else its journal
	// would have it archived again after the restart, under the new key).
	waitFor(t, "first archive settled", 3*time.Minute, func() bool { return archiveSettled(r.nodes[0]) })

	r.stop(0)
	send(3) // sealed to the only key published: the old one
	rotated, err := ann.Rotate(src)
	if err != nil {
		t.Fatal(err)
	}
	cert := newCert(rotated)
	r.start(0)
	waitFor(t, "ring settled again", 90*time.Second, r.settled)
	serveUser(t, r.nodes[0], rotated, cert)
	send(4)
	waitFor(t, "mail from both sides of the rotation delivered", 3*time.Minute, func() bool { return inboxSize(r.nodes[0], ann.Address) == 5 })
	waitFor(t, "archive settled", 3*time.Minute, func() bool { return archiveSettled(r.nodes[0]) })

	r.disaster(t, 0)
	rec := r.nodes[2]
	recoverArchive(t, rec, cert)
	serveUser(t, rec, rotated, cert)
	checkInbox(t, rec, ann.Address, want)
}
