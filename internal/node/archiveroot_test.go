package node

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/glacier"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/post"
	"github.com/epost-mail/epost/internal/store"
)

// TestRootRecordNamesTheArchiveChainEnd: the user's root record names
// the end of their archive chain: once archiving settles, a position at
// most one behind the last bundle placed (the bundle that holds nothing
// but the root record's own new version is not recorded), with that
// bundle's manifest hash. Then the last bundles' fragments are destroyed
// on every disk and every PAST object but the root record is lost:
// recovery from the archive, reading the floor from the root record,
// reports the destroyed positions up to it as lost instead of ending the
// chain early and reporting success.
func TestRootRecordNamesTheArchiveChainEnd(t *testing.T) {
	const n = 5
	gcfg := glacier.ConfigFor(n)
	gcfg.ArchiveDelay = 2 * env.Second
	gcfg.StoreTimeout = 30 * env.Second
	gcfg.FetchTimeout = 10 * env.Second
	gcfg.RecoverLookAhead = 4
	r := newStorageRingWith(t, n, func(c *Config) {
		c.Glacier, c.Community = gcfg, n
		c.Overlay = testOverlayConfig(24)
	})
	waitFor(t, "ring settled", 90*time.Second, r.settled)
	src := &seq{n: 11000}
	ann, annCert, err := r.ca.NewUser(src, "ann@root.epost")
	if err != nil {
		t.Fatal(err)
	}
	ben, benCert, err := r.ca.NewUser(src, "ben@root.epost")
	if err != nil {
		t.Fatal(err)
	}
	home := r.nodes[0]
	serveUser(t, home, ann, annCert)
	serveUser(t, r.nodes[1], ben, benCert)

	// Three waves of mail, each archived before the next: several bundles.
	sent := 0
	for wave := range 3 {
		for range 2 {
			body := []byte(fmt.Sprintf("From: %s\r\nSubject: %d\r\n\r\nmessage %d\r\n", ben.Address, sent, sent))
			sent++
			done := make(chan error, 1)
			r.nodes[1].Post(func() {
				r.nodes[1].Mail().Send(ben.Address, []string{ann.Address}, body, func(err error) { done <- err })
			})
			if err := <-done; err != nil {
				t.Fatalf("send: %v", err)
			}
		}
		waitFor(t, fmt.Sprintf("wave %d delivered", wave), 2*time.Minute, func() bool { return inboxSize(home, ann.Address) == sent })
		waitFor(t, fmt.Sprintf("wave %d archived", wave), 2*time.Minute, func() bool { return archiveSettled(home) })
	}

	// (1) The root record names the chain's end, within one.
	var root post.ArchiveRoot
	var last uint64
	waitFor(t, "root record names the chain end", 2*time.Minute, func() bool {
		ok := false
		home.Do(func() {
			q := home.Archive().Queue(annCert.UserID.ID)
			root = home.Mail().User(ann.Address).ArchiveRoot()
			last = q.NextSeq - 1
			ok = q.Objects == 0 && q.Placing == 0 && q.NextSeq > 0 && root.Seq+1 >= last && root.Seq <= last
		})
		return ok
	})
	if root.Seq < 2 {
		t.Fatalf("root names bundle %d of %d: want several bundles", root.Seq, last+1)
	}
	fetched := make(chan error, 1)
	home.Do(func() {
		home.Archive().Fetch(annCert.UserID.ID, root.Seq, func(_ *glacier.Bundle, m *glacier.Manifest, err error) {
			if err == nil && m.Hash() != root.Manifest {
				mh := m.Hash()
				err = fmt.Errorf("manifest %x, root record names %x", mh[:4], root.Manifest[:4])
			}
			fetched <- err
		})
	})
	if err := <-fetched; err != nil {
		t.Fatalf("bundle %d the root names: %v", root.Seq, err)
	}
	if last > root.Seq {
		// The bundle past the recorded end is the echo of that record:
		// it holds nothing but root records, and recording it would
		// start the cycle again.
		echo := make(chan error, 1)
		home.Do(func() {
			home.Archive().Fetch(annCert.UserID.ID, last, func(b *glacier.Bundle, _ *glacier.Manifest, err error) {
				if err != nil {
					echo <- err
					return
				}
				for _, o := range b.Objects {
					if err == nil && o.Key != [32]byte(post.RootKey(annCert.UserID)) {
						err = fmt.Errorf("object %x in it is not the root record", o.Key[:4])
					}
				}
				echo <- err
			})
		})
		if err := <-echo; err != nil {
			t.Fatalf("bundle %d past the recorded end: %v", last, err)
		}
	}
	t.Logf("root record names bundle %d; the chain ends at %d", root.Seq, last)

	// (2) The disaster: every fragment of bundles root.Seq-1 and on is
	// destroyed, and every PAST object but the root record is lost.
	for i := range r.nodes {
		r.stop(i)
	}
	rootKey := store.Key(post.RootKey(annCert.UserID))
	destroyed := 0
	for i := range r.nodes {
		st, err := store.Open(filepath.Join(r.cfgs[i].DataDir, "store.db"), store.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		for s := root.Seq - 1; s <= last; s++ {
			bk := glacier.BundleKey(annCert.UserID.ID, s)
			ks, _, err := st.Keys(store.KindFragment, store.Range{}, nil, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range ks {
				if [16]byte(k[:16]) == [16]byte(bk) {
					if err := st.Delete(store.KindFragment, k); err != nil {
						t.Fatal(err)
					}
					destroyed++
				}
			}
		}
		for _, kind := range []store.Kind{store.KindImmutable, store.KindMutable, store.KindSet} {
			ks, _, err := st.Keys(kind, store.Range{}, nil, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range ks {
				if kind == store.KindMutable && k == rootKey {
					continue
				}
				if err := st.Delete(kind, k); err != nil {
					t.Fatal(err)
				}
			}
		}
		st.Close()
	}
	if destroyed == 0 {
		t.Fatal("no fragment of the last bundles found")
	}
	for i := range r.nodes {
		r.start(i)
	}
	waitFor(t, "ring settled again", 90*time.Second, r.settled)

	rec := r.nodes[2]
	type outcome struct {
		n   int
		err error
	}
	got := make(chan outcome, 1)
	rec.Do(func() {
		rec.RecoverArchiveWith(annCert.UserID, func([]byte) (identity.UserKeys, error) { return ann, nil }, nil,
			func(k int, err error) { got <- outcome{k, err} })
	})
	var o outcome
	select {
	case o = <-got:
	case <-time.After(3 * time.Minute):
		t.Fatal("recovery: no answer")
	}
	want := fmt.Sprintf("[%d-%d]", root.Seq-1, root.Seq)
	if !errors.Is(o.err, glacier.ErrLost) || !strings.Contains(o.err.Error(), want) {
		t.Fatalf("recovery: %d objects, error %v; want ErrLost naming bundles %s", o.n, o.err, want)
	}
	if o.n == 0 {
		t.Error("nothing restored from the bundles before the lost tail")
	}
	t.Logf("recovery: %d objects restored, %v", o.n, o.err)
}
