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
	"github.com/epost-mail/epost/internal/sim"
	"github.com/epost-mail/epost/internal/store"
)

// testPastConfig shortens maintenance so the tests run in little virtual
// time.
func testPastConfig() past.Config {
	c := past.DefaultConfig()
	c.MaintainPeriod = 2 * env.Minute
	c.RepairDelay = 5 * env.Minute
	return c
}

func newStorage(t *testing.T, seed uint64, n int, cfg past.Config) (*Storage, []sim.HostID) {
	t.Helper()
	sc := sim.DefaultConfig(seed)
	sc.InvariantEvery = 0
	s, err := NewStorage(sc, overlay.SimConfig(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := s.BuildStorage(n, 200*env.Millisecond, 2*env.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, hosts
}

// await runs the simulation until cond holds, failing after limit.
func await(t *testing.T, s *Storage, what string, limit env.Duration, cond func() bool) {
	t.Helper()
	ok, err := s.S.RunWhile(func() bool { return !cond() }, s.S.Now().Add(limit))
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("%s: not reached within %v s of virtual time", what, limit.Seconds())
	}
}

// insert inserts data from h and waits for the outcome.
func insert(t *testing.T, s *Storage, h sim.HostID, data []byte) (past.InsertResult, error) {
	t.Helper()
	var res past.InsertResult
	var err error
	done := false
	s.Past(h).Insert(data, past.LeaseMailbox, func(r past.InsertResult, e error) { res, err, done = r, e, true })
	await(t, s, "insert", time1m, func() bool { return done })
	return res, err
}

func pastLookup(t *testing.T, s *Storage, h sim.HostID, key store.Key) ([]byte, error) {
	t.Helper()
	var b []byte
	var err error
	done := false
	s.Past(h).Lookup(key, func(d []byte, e error) { b, err, done = d, e, true })
	await(t, s, "lookup", time1m, func() bool { return done })
	return b, err
}

func holders(s *Storage, key store.Key) map[sim.HostID]bool {
	m := map[sim.HostID]bool{}
	for h := range s.disks {
		if ok, _ := s.disks[h].Has(store.KindImmutable, key); ok {
			m[sim.HostID(h)] = true
		}
	}
	return m
}

func TestInsertStoresAtTheKClosestAndEveryNodeReadsIt(t *testing.T) {
	s, hosts := newStorage(t, 1, 30, testPastConfig())
	data := []byte("a message body, encrypted in real life")
	res, err := insert(t, s, hosts[7], data)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Receipts) < 2 {
		t.Fatalf("accepted with %d receipts", len(res.Receipts))
	}
	// Receipts and copies are the oracle's replica set, all of it.
	want := s.ReplicaHosts(res.Key, 3)
	have := holders(s, res.Key)
	for _, h := range want {
		if !have[h] {
			t.Errorf("replica %d (one of the 3 closest) holds no copy", h)
		}
	}
	if len(have) != 3 {
		t.Errorf("%d copies, want 3", len(have))
	}
	for _, h := range hosts {
		b, err := pastLookup(t, s, h, res.Key)
		if err != nil || !bytes.Equal(b, data) {
			t.Fatalf("lookup from %d: %q, %v", h, b, err)
		}
	}
	if _, err := pastLookup(t, s, hosts[3], store.ImmutableKey([]byte("never stored"))); !errors.Is(err, past.ErrNotFound) {
		t.Fatalf("lookup of a missing key: %v, want ErrNotFound", err)
	}
}

func TestLookupFallsBackWhenTheRootCopyIsCorrupt(t *testing.T) {
	s, hosts := newStorage(t, 2, 20, testPastConfig())
	data := []byte("precious")
	res, err := insert(t, s, hosts[0], data)
	if err != nil {
		t.Fatal(err)
	}
	root := s.ReplicaHosts(res.Key, 1)[0]
	// Flip the root's copy on disk: its reads fail verification and it
	// answers "not found", so the reader goes to the other replicas.
	s.Disk(root).Corrupt(store.KindImmutable, res.Key)
	for _, h := range hosts {
		if h == root {
			continue
		}
		b, err := pastLookup(t, s, h, res.Key)
		if err != nil || !bytes.Equal(b, data) {
			t.Fatalf("lookup from %d with a corrupt root copy: %q, %v", h, b, err)
		}
	}
}

func TestReplicasAreRestoredAfterAHolderDies(t *testing.T) {
	cfg := testPastConfig()
	s, hosts := newStorage(t, 3, 30, cfg)
	var keys []store.Key
	for i := 0; i < 20; i++ {
		res, err := insert(t, s, hosts[i], []byte{byte(i), 1, 2, 3})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, res.Key)
	}
	// Kill the root of the first key for good.
	dead := s.ReplicaHosts(keys[0], 1)[0]
	s.Crash(dead)
	s.Disk(dead).Wipe()
	live := func(key store.Key) int {
		n := 0
		for h := range holders(s, key) {
			if s.S.Up(h) {
				n++
			}
		}
		return n
	}
	// Carbonite waits RepairDelay before making a new copy, then repairs.
	await(t, s, "every key back at 3 live copies", 30*env.Minute, func() bool {
		for _, k := range keys {
			if live(k) < 3 {
				return false
			}
		}
		return true
	})
	for _, k := range keys {
		for _, h := range s.ReplicaHosts(k, 3) {
			if ok, _ := s.Disk(h).Has(store.KindImmutable, k); !ok {
				t.Errorf("key %s: replica %d has no copy after repair", k.Short(), h)
			}
		}
	}
}

func TestAReturningHolderCountsAgainAndNothingIsRecopied(t *testing.T) {
	cfg := testPastConfig()
	cfg.RepairDelay = 30 * env.Minute
	s, hosts := newStorage(t, 4, 30, cfg)
	var keys []store.Key
	for i := 0; i < 20; i++ {
		res, err := insert(t, s, hosts[i], []byte{byte(i), 9})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, res.Key)
	}
	// Let maintenance learn who holds what.
	if err := s.S.RunFor(10 * env.Minute); err != nil {
		t.Fatal(err)
	}
	before := s.TotalPastStats().Pushes
	h := s.ReplicaHosts(keys[0], 1)[0]
	s.Crash(h)
	if err := s.S.RunFor(10 * env.Minute); err != nil {
		t.Fatal(err)
	}
	s.S.Restart(h)
	if err := s.S.RunFor(20 * env.Minute); err != nil {
		t.Fatal(err)
	}
	if pushes := s.TotalPastStats().Pushes - before; pushes != 0 {
		t.Errorf("a 10-minute absence caused %d copies; want none (RepairDelay 30 min)", pushes)
	}
	for _, k := range keys {
		if n := len(holders(s, k)); n != 3 {
			t.Errorf("key %s: %d copies, want 3", k.Short(), n)
		}
	}
}

func TestNewNodeReceivesItsShareOnceSettled(t *testing.T) {
	cfg := testPastConfig()
	s, hosts := newStorage(t, 5, 20, cfg)
	var keys []store.Key
	for i := 0; i < 40; i++ {
		res, err := insert(t, s, hosts[i%len(hosts)], []byte{byte(i), 7, 7})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, res.Key)
	}
	var added []sim.HostID
	for i := 0; i < 5; i++ {
		h, err := s.AddNode()
		if err != nil {
			t.Fatal(err)
		}
		added = append(added, h)
	}
	await(t, s, "newcomers active", time1m, func() bool {
		for _, h := range added {
			if o := s.Node(h); o == nil || !o.Active() {
				return false
			}
		}
		return true
	})
	// Within RepairDelay plus a couple of rounds, every key's three closest
	// nodes, newcomers included, hold it.
	await(t, s, "newcomers hold their share", 30*env.Minute, func() bool {
		for _, k := range keys {
			for _, h := range s.ReplicaHosts(k, 3) {
				if ok, _ := s.Disk(h).Has(store.KindImmutable, k); !ok {
					return false
				}
			}
		}
		return true
	})
	got := 0
	for _, h := range added {
		got += s.Disk(h).Len()
	}
	if got == 0 {
		t.Fatal("no newcomer was given anything")
	}
}

// user makes a user of the storage ring's community.
func user(t *testing.T, s *Storage, address string) (identity.UserKeys, *identity.UserCert) {
	t.Helper()
	rr := randReader{s.S.Rand()}
	keys, err := identity.GenerateUserKeys(rr, address)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := s.CA.IssueUser(rr, address, keys.Signing.Public(), keys.Sealing.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	return keys, cert
}

func insertMutable(t *testing.T, s *Storage, h sim.HostID, m *past.Mutable) (past.InsertResult, error) {
	t.Helper()
	var res past.InsertResult
	var err error
	done := false
	s.Past(h).InsertMutable(m, past.LeaseMailbox, func(r past.InsertResult, e error) { res, err, done = r, e, true })
	await(t, s, "insert mutable", time1m, func() bool { return done })
	return res, err
}

func lookupMutable(t *testing.T, s *Storage, h sim.HostID, key store.Key) (past.MutableResult, error) {
	t.Helper()
	var res past.MutableResult
	var err error
	done := false
	s.Past(h).LookupMutable(key, func(r past.MutableResult, e error) { res, err, done = r, e, true })
	await(t, s, "lookup mutable", time1m, func() bool { return done })
	return res, err
}

func TestMutableVersionsRollbackAndForks(t *testing.T) {
	s, hosts := newStorage(t, 6, 20, testPastConfig())
	keys, cert := user(t, s, "alice@demo.epost")
	sign := func(v uint64, data string) *past.Mutable {
		m, err := past.SignMutable(keys, cert, "head/INBOX", v, []byte(data))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	for v := uint64(1); v <= 3; v++ {
		if _, err := insertMutable(t, s, hosts[0], sign(v, "state")); err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
	}
	key := sign(1, "").Key()
	res, err := lookupMutable(t, s, hosts[9], key)
	if err != nil || res.Forked() || res.Versions[0].Version != 3 {
		t.Fatalf("lookup: %+v, %v; want version 3, no fork", res, err)
	}
	// An older version is refused by the replicas: no rollback.
	if _, err := insertMutable(t, s, hosts[4], sign(2, "old")); !errors.Is(err, past.ErrRefused) {
		t.Fatalf("inserting version 2 over 3: %v, want ErrRefused", err)
	}
	// One stale replica does not roll a reader back: put version 2 back on
	// one holder's disk, as a replica that missed the update would have.
	stale := s.ReplicaHosts(key, 3)[2]
	s.Disk(stale).Wipe()
	_, err = insertMutable(t, s, stale, sign(2, "state"))
	_ = err // the others refuse it; the stale holder keeps v2
	res, err = lookupMutable(t, s, hosts[11], key)
	if err != nil || res.Versions[0].Version != 3 {
		t.Fatalf("lookup with one stale replica: %+v, %v; want version 3", res, err)
	}
	// Two different objects with one version are a fork: kept and reported.
	if _, err := insertMutable(t, s, hosts[1], sign(4, "left")); err != nil {
		t.Fatal(err)
	}
	if _, err := insertMutable(t, s, hosts[2], sign(4, "right")); err != nil {
		t.Fatal(err)
	}
	res, err = lookupMutable(t, s, hosts[5], key)
	if err != nil || !res.Forked() || res.Versions[0].Version != 4 {
		t.Fatalf("lookup after a fork: %d versions, %v; want both version-4 objects", len(res.Versions), err)
	}
	// A forged object (signed by a user of another community) is refused.
	other, err := identity.NewCA(randReader{s.S.Rand()})
	if err != nil {
		t.Fatal(err)
	}
	rr := randReader{s.S.Rand()}
	mk, _ := identity.GenerateUserKeys(rr, "alice@demo.epost")
	mc, err := other.IssueUser(rr, "alice@demo.epost", mk.Signing.Public(), mk.Sealing.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	forged, err := past.SignMutable(mk, mc, "head/INBOX", 9, []byte("evil"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := insertMutable(t, s, hosts[3], forged); !errors.Is(err, past.ErrBadObject) {
		t.Fatalf("forged insert: %v, want ErrBadObject", err)
	}
}

func TestLeasesIgnoreWallClockSkew(t *testing.T) {
	run := func(skew float64) *Result {
		res, err := RunLeases(LeasesConfig{Nodes: 20, Seed: 3, Objects: 120, GarbageFraction: 0.75, ClockSkewDays: skew, LeaseHours: 1})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b := run(0), run(730)
	for _, f := range []string{"live_lost", "garbage_reclaimed_fraction", "storage_bytes_before", "storage_bytes_after", "renewals", "swept", "events"} {
		if a.Get(f) != b.Get(f) {
			t.Errorf("%s: %v with a right clock, %v with a clock 730 days off", f, a.Get(f), b.Get(f))
		}
	}
	if a.Get("live_lost") != 0 {
		t.Errorf("live objects lost: %v", a.Get("live_lost"))
	}
	if f := a.Get("garbage_reclaimed_fraction").(float64); f < 0.99 {
		t.Errorf("garbage reclaimed after two lease periods: %v, want >= 0.99", f)
	}
}

func TestStorageSmoke(t *testing.T) {
	res, err := RunStorage(StorageConfig{Nodes: 30, Seed: 1, Objects: 100, SessionMinutes: 30, DowntimeMinutes: 10, Minutes: 40, SettleMinutes: 40, ReadRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Get("acknowledged").(int) == 0 || res.Get("lost_objects").(int) != 0 || res.Get("bad_receipts").(uint64) != 0 {
		t.Fatalf("storage under churn: %v", res.vals)
	}
}

// testSets admits members that start with "ok" and releases whose proof
// names the member.
type testSets struct{}

func (testSets) CheckMember(_ store.Key, m []byte) error {
	if !bytes.HasPrefix(m, []byte("ok")) {
		return errors.New("not ok")
	}
	return nil
}

func (testSets) CheckRelease(_ store.Key, member store.Key, proof []byte) error {
	if !bytes.Equal(proof, append([]byte("release:"), member[:]...)) {
		return errors.New("bad proof")
	}
	return nil
}

func TestSetsMergeByUnionReleaseAndPushToWatchers(t *testing.T) {
	cfg := testPastConfig()
	cfg.MaxSetMembers = 50
	s, hosts := newStorage(t, 7, 20, cfg)
	s.Sets = testSets{}
	for _, h := range hosts {
		s.Past(h).SetPolicy(testSets{}) // the nodes already running
	}
	set := store.ImmutableKey([]byte("alice's pending set"))
	watcherHost := hosts[13]
	var pushed [][]byte
	s.Past(watcherHost).OnSetMember = func(k store.Key, m []byte) {
		if k == set {
			pushed = append(pushed, m)
		}
	}
	s.Past(watcherHost).Watch(set, 5*env.Minute)
	if err := s.S.RunFor(5 * env.Second); err != nil {
		t.Fatal(err)
	}
	add := func(h sim.HostID, m string) error {
		var err error
		done := false
		s.Past(h).SetAdd(set, []byte(m), past.LeaseNotification, func(_ past.InsertResult, e error) { err, done = e, true })
		await(t, s, "set add", time1m, func() bool { return done })
		return err
	}
	// Many writers, at once and one by one.
	for i := 0; i < 10; i++ {
		if err := add(hosts[i], fmt.Sprintf("ok %d", i)); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	if err := add(hosts[2], "evil"); !errors.Is(err, past.ErrRefused) {
		t.Fatalf("a member the policy refuses: %v, want ErrRefused", err)
	}
	members := func(h sim.HostID) map[string]bool {
		var got [][]byte
		var err error
		done := false
		s.Past(h).LookupSet(set, func(m [][]byte, e error) { got, err, done = m, e, true })
		await(t, s, "set lookup", time1m, func() bool { return done })
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, m := range got {
			out[string(m)] = true
		}
		return out
	}
	if got := members(hosts[19]); len(got) != 10 {
		t.Fatalf("union of 10 adds: %d members", len(got))
	}
	if err := s.S.RunFor(5 * env.Second); err != nil {
		t.Fatal(err)
	}
	if len(pushed) < 10 {
		t.Fatalf("watcher heard %d of 10 new members", len(pushed))
	}
	// A release with a bad proof is refused; a good one removes the member
	// everywhere, and maintenance does not bring it back.
	victim := []byte("ok 3")
	vk := past.MemberKey(victim)
	rel := func(proof []byte) error {
		var err error
		done := false
		s.Past(hosts[5]).SetRelease(set, vk, proof, past.LeaseNotification, func(_ past.InsertResult, e error) { err, done = e, true })
		await(t, s, "set release", time1m, func() bool { return done })
		return err
	}
	if err := rel([]byte("forged")); !errors.Is(err, past.ErrRefused) {
		t.Fatalf("release with a forged proof: %v", err)
	}
	if err := rel(append([]byte("release:"), vk[:]...)); err != nil {
		t.Fatal(err)
	}
	// A replica that missed everything is refilled by maintenance, by
	// union, without the released member.
	rep := s.ReplicaHosts(set, 3)[1]
	s.Disk(rep).Wipe()
	if err := s.S.RunFor(20 * env.Minute); err != nil {
		t.Fatal(err)
	}
	got := members(hosts[0])
	if len(got) != 9 || got["ok 3"] {
		t.Fatalf("after release and repair: %v", got)
	}
	if ok, _ := s.Disk(rep).Has(store.KindSet, set); !ok {
		t.Fatal("wiped replica not refilled")
	}
	// The queue cap holds.
	for i := 10; i < 60; i++ {
		_ = add(hosts[i%20], fmt.Sprintf("ok %d", i))
	}
	if n := len(members(hosts[1])); n > 50 {
		t.Fatalf("%d members, cap 50", n)
	}
}

// TestObjectStaysReadableWhenCloserNodesReturn: an object inserted while
// the nodes closest to its key were away is held a little further out.
// When they return they hold nothing until maintenance gives them their
// share (after RepairDelay), and a reader must still find the copies that
// were acknowledged.
func TestObjectStaysReadableWhenCloserNodesReturn(t *testing.T) {
	cfg := testPastConfig()
	cfg.RepairDelay = 30 * env.Minute
	s, hosts := newStorage(t, 8, 30, cfg)
	data := []byte("inserted while its closest nodes were away")
	key := store.ImmutableKey(data)
	// The six closest (2k, what a root names to readers) are away.
	away := s.ReplicaHosts(key, 6)
	for _, h := range away {
		s.Crash(h)
	}
	if err := s.S.RunFor(5 * env.Minute); err != nil {
		t.Fatal(err)
	}
	var from, reader sim.HostID = -1, -1
	for _, h := range hosts {
		if !slices.Contains(away, h) {
			if from < 0 {
				from = h
			} else if reader < 0 {
				reader = h
			}
		}
	}
	if _, err := insert(t, s, from, data); err != nil {
		t.Fatal(err)
	}
	// Away long enough to come back as newcomers, as in a long absence.
	if err := s.S.RunFor(2 * env.Hour); err != nil {
		t.Fatal(err)
	}
	for _, h := range away {
		s.S.Restart(h)
	}
	if err := s.S.RunFor(90 * env.Second); err != nil {
		t.Fatal(err)
	}
	for h := range holders(s, key) {
		if slices.Contains(away, h) {
			t.Fatalf("host %d got its share before RepairDelay; the test no longer tests the read", h)
		}
	}
	var got []byte
	var err error
	done := false
	s.Past(reader).Lookup(key, func(b []byte, e error) { got, err, done = b, e, true })
	for !done {
		if e := s.S.RunFor(env.Second); e != nil {
			t.Fatal(e)
		}
	}
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("lookup with the closest nodes back but empty: %v", err)
	}
}
