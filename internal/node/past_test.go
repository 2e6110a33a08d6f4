package node

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/store"
)

// testPastConfig makes maintenance and Carbonite's patience short enough
// for a test, and waits long enough for a loaded machine.
func testPastConfig() past.Config {
	c := past.DefaultConfig()
	c.MaintainPeriod = 2 * env.Second
	c.MaintainDelay = 500 * env.Millisecond
	c.RepairDelay = 3 * env.Second
	c.FullSyncRounds = 3
	c.InsertTimeout = 60 * env.Second
	c.LookupTimeout = 10 * env.Second
	c.FetchTimeout = 5 * env.Second
	// A few hundred objects per node: a scrub pass every few seconds.
	c.ScrubPeriod = 500 * env.Millisecond
	c.ScrubBatch = 200
	return c
}

// storageRing is n nodes with on-disk stores running PAST.
type storageRing struct {
	t     *testing.T
	ca    *identity.CA
	cfgs  []Config
	nodes []*Node
}

func newStorageRing(t *testing.T, n int) *storageRing {
	return newStorageRingWith(t, n, nil)
}

// newStorageRingWith is newStorageRing with tweak applied to every node's
// configuration before it starts.
func newStorageRingWith(t *testing.T, n int, tweak func(*Config)) *storageRing {
	r := &storageRing{t: t}
	src := &seq{n: 1000}
	var err error
	if r.ca, err = identity.NewCA(src); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i := range n {
		key, err := identity.GenerateNodeKey(src)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := r.ca.IssueNode(src, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		r.cfgs = append(r.cfgs, Config{
			ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
			Key:         key,
			Cert:        cert,
			CA:          r.ca.Public(),
			Overlay:     testOverlayConfig(8),
			Log:         testLog(),
			DataDir:     filepath.Join(dir, fmt.Sprintf("node%d", i)),
			Past:        testPastConfig(),
		})
		if tweak != nil {
			tweak(&r.cfgs[i])
		}
		r.nodes = append(r.nodes, nil)
		r.start(i)
	}
	t.Cleanup(func() {
		for i, nd := range r.nodes {
			if nd != nil {
				if err := nd.Close(); err != nil {
					t.Errorf("close node %d: %v", i, err)
				}
			}
		}
	})
	return r
}

// start starts node i, joining through node 0 unless it is node 0 (or
// through any other live node when node 0 is down).
func (r *storageRing) start(i int) {
	c := r.cfgs[i]
	c.Bootstrap = nil
	for j, nd := range r.nodes {
		if j != i && nd != nil {
			c.Bootstrap = append(c.Bootstrap, nd.Addr())
		}
	}
	nd, err := New(c)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := nd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.nodes[i] = nd
}

func (r *storageRing) stop(i int) {
	if err := r.nodes[i].Close(); err != nil {
		r.t.Fatal(err)
	}
	r.nodes[i] = nil
}

// settled: every live node is active and has every other live node in its
// leaf set (the ring is smaller than the leaf set).
func (r *storageRing) settled() bool {
	live := 0
	for _, nd := range r.nodes {
		if nd != nil {
			live++
		}
	}
	for _, nd := range r.nodes {
		if nd == nil {
			continue
		}
		ok := false
		if err := nd.Do(func() { ok = nd.ov.Active() && nd.ov.Leaf().Len() == live-1 }); err != nil || !ok {
			return false
		}
	}
	return true
}

// describe says what each live node sees, for failure messages.
func (r *storageRing) describe() string {
	var b bytes.Buffer
	for i, nd := range r.nodes {
		if nd == nil {
			fmt.Fprintf(&b, "\n node %d: down", i)
			continue
		}
		var active bool
		var leaf []string
		nd.Do(func() {
			active = nd.ov.Active()
			for _, h := range nd.ov.Leaf().Members() {
				leaf = append(leaf, h.ID.ID.Short())
			}
		})
		fmt.Fprintf(&b, "\n node %d %s: active %v, leaf %v", i, nd.ID().ID.Short(), active, leaf)
	}
	return b.String()
}

// closest returns the indexes of the k nodes (live or not) closest to key.
func (r *storageRing) closest(key store.Key, k int) []int {
	idx := make([]int, len(r.cfgs))
	for i := range idx {
		idx[i] = i
	}
	x := key.Ring()
	sort.Slice(idx, func(a, b int) bool {
		return id.Closer(x, r.cfgs[idx[a]].Cert.NodeID.ID, r.cfgs[idx[b]].Cert.NodeID.ID)
	})
	return idx[:k]
}

func TestPastOnRealNodes(t *testing.T) {
	const n, objects, later = 6, 500, 100
	r := newStorageRing(t, n)
	waitFor(t, "ring settled", 60*time.Second, r.settled)

	var mu sync.Mutex
	data := make([][]byte, objects+later)
	keys := make([]store.Key, objects+later)
	for i := range data {
		data[i] = []byte(fmt.Sprintf("object %d: %s", i, bytes.Repeat([]byte{byte(i)}, i%200)))
		keys[i] = store.ImmutableKey(data[i])
	}
	// insertAll inserts objects [from, to) from the live nodes in turn,
	// all at once, and waits until every one is acknowledged.
	insertAll := func(from, to int) {
		t.Helper()
		var errs []error
		done := 0
		var live []*Node
		for _, nd := range r.nodes {
			if nd != nil {
				live = append(live, nd)
			}
		}
		for i := from; i < to; i++ {
			nd := live[i%len(live)]
			if !nd.Post(func() {
				nd.Past().Insert(data[i], past.LeaseMailbox, func(_ past.InsertResult, err error) {
					mu.Lock()
					defer mu.Unlock()
					done++
					if err != nil {
						errs = append(errs, err)
					}
				})
			}) {
				t.Fatal("node stopped")
			}
		}
		waitFor(t, fmt.Sprintf("%d inserts acknowledged", to-from), 120*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return done == to-from })
		if len(errs) > 0 {
			t.Fatalf("%d inserts failed, first: %v", len(errs), errs[0])
		}
	}
	// onReplicas: every object of keys[:upTo] is on the disks of its three
	// closest live nodes.
	onReplicas := func(upTo int) func() bool {
		return func() bool {
			for _, k := range keys[:upTo] {
				for _, j := range r.closest(k, 3) {
					if r.nodes[j] == nil {
						continue
					}
					if ok, err := r.nodes[j].Store().Has(store.KindImmutable, k); err != nil || !ok {
						return false
					}
				}
			}
			return true
		}
	}
	insertAll(0, objects)
	waitFor(t, "every object on its 3 closest nodes", 60*time.Second, onReplicas(objects))

	// Stop two nodes: every object stays readable from the others.
	r.stop(1)
	r.stop(4)
	reader := r.nodes[0]
	got := 0
	var bad []string
	for i := range objects {
		if !reader.Post(func() {
			reader.Past().Lookup(keys[i], func(b []byte, err error) {
				mu.Lock()
				defer mu.Unlock()
				got++
				if err != nil || !bytes.Equal(b, data[i]) {
					bad = append(bad, fmt.Sprintf("object %d: %v", i, err))
				}
			})
		}) {
			t.Fatal("reader stopped")
		}
	}
	waitFor(t, "500 lookups answered", 180*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return got == objects })
	if len(bad) > 0 {
		t.Fatalf("%d of %d objects unreadable with 2 nodes down, first: %s", len(bad), objects, bad[0])
	}

	// While they are down, more objects arrive, some of which belong on
	// them; node 4's disk is replaced (wiped) and one of node 1's copies
	// rots on disk. Maintenance must move data to both once they are back.
	// (The inserts wait for the others to notice the two are gone: one
	// that races the failure is accepted by a later attempt, 20 s on.)
	waitFor(t, "ring settled with 2 nodes down", 60*time.Second, r.settled)
	insertAll(objects, objects+later)
	if err := os.RemoveAll(r.cfgs[4].DataDir); err != nil {
		t.Fatal(err)
	}
	rotten := -1
	for i, k := range keys[:objects] {
		if slices.Contains(r.closest(k, 3), 1) {
			rotten = i
			break
		}
	}
	corruptOnDisk(t, filepath.Join(r.cfgs[1].DataDir, "store.db"), keys[rotten])
	owed := 0 // objects that belong on node 1 or 4 and that they lack
	for _, k := range keys[objects:] {
		if c := r.closest(k, 3); slices.Contains(c, 1) || slices.Contains(c, 4) {
			owed++
		}
	}
	if owed == 0 {
		t.Fatal("no new object belongs on a stopped node; the restart moves nothing")
	}

	// Restart them: the ring heals, node 1's scrub drops the rotten copy,
	// and maintenance brings every object to its three closest nodes.
	r.start(1)
	r.start(4)
	waitFor(t, "ring settled after restart", 90*time.Second, func() bool {
		ok := r.settled()
		if !ok && testing.Verbose() {
			t.Log(r.describe())
		}
		return ok
	})
	waitFor(t, "replicas back at the 3 closest nodes", 90*time.Second, onReplicas(objects+later))
	if b, err := r.nodes[1].Store().Get(store.KindImmutable, keys[rotten]); err != nil || !bytes.Equal(b, data[rotten]) {
		t.Fatalf("node 1's rotten copy of object %d: %v", rotten, err)
	}
	var dropped, stored uint64
	for i, nd := range r.nodes {
		var st past.Stats
		if err := nd.Do(func() { st = nd.Past().Stats() }); err != nil {
			t.Fatal(err)
		}
		if st.BadReceipts != 0 || st.BadObjects != 0 || st.StoreErrors != 0 {
			t.Errorf("node %s: %+v", nd.ID().Short(), st)
		}
		if i == 1 {
			dropped = st.ScrubDropped
		}
		if i == 1 || i == 4 {
			stored += st.Stored
		}
	}
	if dropped != 1 {
		t.Errorf("node 1's scrub dropped %d entries, want the 1 rotten copy", dropped)
	}
	if stored < uint64(owed) {
		t.Errorf("the restarted nodes stored %d copies; at least %d new objects were owed to them", stored, owed)
	}
}

// corruptOnDisk flips the last byte of an immutable object's record in a
// closed store's file, as a failing disk would.
func corruptOnDisk(t *testing.T, path string, key store.Key) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("obj/" + store.KindImmutable.String()))
		v := bytes.Clone(b.Get(key[:]))
		if v == nil {
			return fmt.Errorf("%s not on disk", key.Short())
		}
		v[len(v)-1] ^= 1
		return b.Put(key[:], v)
	})
	if err != nil {
		t.Fatal(err)
	}
}
