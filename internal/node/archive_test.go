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

// TestArchiveRebuildsMailboxesAfterDisaster: three users on 12 real nodes
// exchange 200 messages, which are archived. Then 7 of the 12 nodes (58%,
// the users' own among them) are gone for good and the 5 survivors lose
// every PAST object they held. From the survivors' archive fragments
// alone, every user's mailbox is rebuilt on a survivor: every message,
// byte for byte.
func TestArchiveRebuildsMailboxesAfterDisaster(t *testing.T) {
	const n, killed, msgs = 12, 7, 200
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

	type user struct {
		keys identity.UserKeys
		cert *identity.UserCert
		node int
	}
	src := &seq{n: 7000}
	var users []user
	for i, addr := range []string{"ann@dr.epost", "ben@dr.epost", "cat@dr.epost"} {
		keys, cert := r.addUser(t, r.nodes[i], src, addr)
		users = append(users, user{keys, cert, i})
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
	inbox := func(nd *Node, addr string) int {
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
	for _, u := range users {
		waitFor(t, "every message delivered to "+u.keys.Address, 3*time.Minute, func() bool {
			return inbox(r.nodes[u.node], u.keys.Address) == len(want[u.keys.Address])
		})
	}
	// Everything the mailboxes need is archived: queues empty, no bundle
	// still being placed.
	for _, u := range users {
		nd := r.nodes[u.node]
		waitFor(t, "archive of "+u.keys.Address+" settled", 3*time.Minute, func() bool {
			s := nd.Status().Storage
			return s != nil && s.ArchiveQueued == 0 && s.ArchivePlacing == 0 && s.ArchivedBundles > 0
		})
	}

	// The disaster.
	for i := range killed {
		r.stop(i)
	}
	wiped := 0
	for i := killed; i < n; i++ {
		r.stop(i)
		wiped += wipePast(t, r.cfgs[i].DataDir)
	}
	if wiped == 0 {
		t.Fatal("the survivors held no PAST objects to lose")
	}
	for i := killed; i < n; i++ {
		r.start(i)
	}
	waitFor(t, "survivors settled", 90*time.Second, r.settled)

	// Recovery on a survivor, from the archive alone, for all three users
	// at once.
	rec := r.nodes[killed]
	type outcome struct {
		addr string
		n    int
		err  error
	}
	got := make(chan outcome, len(users))
	if err := rec.Do(func() {
		for _, u := range users {
			rec.RecoverArchive(u.cert.UserID, func(k int, err error) { got <- outcome{u.keys.Address, k, err} })
		}
	}); err != nil {
		t.Fatal(err)
	}
	for range users {
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
	for _, u := range users {
		ready := make(chan error, 1)
		var err error
		if e := rec.Do(func() { _, err = rec.Mail().AddUser(u.keys, u.cert, func(e error) { ready <- e }) }); e != nil || err != nil {
			t.Fatal(e, err)
		}
		if err := <-ready; err != nil {
			t.Fatalf("load %s after recovery: %v", u.keys.Address, err)
		}
		addr := u.keys.Address
		if got := inbox(rec, addr); got != len(want[addr]) {
			t.Fatalf("%s: INBOX has %d messages after recovery, want %d", addr, got, len(want[addr]))
		}
		// Every body, byte for byte, in order.
		var mu sync.Mutex
		var bodies [][]byte
		var errs []error
		rec.Do(func() {
			f, _ := rec.Mail().User(addr).Folder("INBOX")
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
		if len(errs) > 0 {
			t.Fatalf("%s: reading a recovered body: %v", addr, errs[0])
		}
		seen := map[string]int{}
		for _, b := range want[addr] {
			seen[string(b)]++
		}
		for _, b := range bodies {
			seen[string(b)]--
		}
		for b, k := range seen {
			if k != 0 {
				t.Fatalf("%s: message %.40q recovered %d times too few", addr, b, k)
			}
		}
		mu.Unlock()
	}
}
