package scenario

import (
	"errors"
	"slices"
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/sim"
	"github.com/epost-mail/epost/internal/store"
	"github.com/epost-mail/epost/internal/wire"
)

// insertFor is insert with a chosen lease.
func insertFor(t *testing.T, s *Storage, h sim.HostID, data []byte, lease env.Duration) (past.InsertResult, error) {
	t.Helper()
	var res past.InsertResult
	var err error
	done := false
	s.Past(h).Insert(data, lease, func(r past.InsertResult, e error) { res, err, done = r, e, true })
	await(t, s, "insert", time1m, func() bool { return done })
	return res, err
}

// remaining is the lease host h's disk has left on an immutable key, in
// its own ticks.
func remaining(t *testing.T, s *Storage, h sim.HostID, key store.Key) env.Duration {
	t.Helper()
	exp, err := s.Disk(h).Lease(store.KindImmutable, key)
	if err != nil {
		t.Fatalf("host %d: lease of %s: %v", h, key.Short(), err)
	}
	return exp.Sub(s.Disk(h).Ticks())
}

// DESIGN.md section 5, store: a periodic scrub finds a corrupt copy that
// nothing reads, drops it, and replica maintenance refills it from
// another holder.
func TestScrubDropsACorruptCopyAndMaintenanceRestoresIt(t *testing.T) {
	cfg := testPastConfig()
	cfg.ScrubPeriod = 10 * env.Second
	cfg.ScrubBatch = 1 // a slice per entry: the cursor carries each pass
	s, hosts := newStorage(t, 6, 20, cfg)
	var keys []store.Key
	for i := 0; i < 12; i++ {
		res, err := insert(t, s, hosts[i], []byte{byte(i), 4, 4})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, res.Key)
	}
	// Let maintenance learn who holds what, so only a full round offers
	// the victim's key to it again.
	if err := s.S.RunFor(5 * env.Minute); err != nil {
		t.Fatal(err)
	}
	key := keys[0]
	victim := s.ReplicaHosts(key, 3)[1]
	if ok, _ := s.Disk(victim).Has(store.KindImmutable, key); !ok {
		t.Fatalf("replica %d holds no copy of %s before the test; holders %v", victim, key.Short(), holders(s, key))
	}
	s.Disk(victim).Corrupt(store.KindImmutable, key)
	await(t, s, "the scrub reports the corrupt copy dropped", 10*env.Minute, func() bool {
		return s.Past(victim).Stats().ScrubDropped > 0
	})
	if ok, _ := s.Disk(victim).Has(store.KindImmutable, key); ok {
		t.Fatal("the scrub reported the copy dropped but the disk still has it")
	}
	if st := s.Past(victim).Stats(); st.ScrubDropped != 1 || st.ScrubPasses == 0 {
		t.Fatalf("victim's scrub: dropped %d, passes %d; want 1 dropped, after whole passes", st.ScrubDropped, st.ScrubPasses)
	}
	// A full round (every FullSyncRounds rounds) offers it back.
	await(t, s, "maintenance restores the copy", env.Duration(cfg.FullSyncRounds+2)*cfg.MaintainPeriod, func() bool {
		b, err := s.Disk(victim).Get(store.KindImmutable, key)
		return err == nil && store.ImmutableKey(b) == key
	})
	for _, k := range keys {
		for _, h := range s.ReplicaHosts(k, 3) {
			if ok, _ := s.Disk(h).Has(store.KindImmutable, k); !ok {
				t.Errorf("key %s: replica %d holds no copy", k.Short(), h)
			}
		}
	}
	if n := s.TotalPastStats().ScrubDropped; n != 1 {
		t.Errorf("%d entries dropped in all, want only the damaged one", n)
	}
}

// lie makes one host, as the root of one key, misbehave towards PAST's
// replica fan-out: it stores and receipts the object itself but sends
// the copies meant for the rest of the replica set to its accomplices
// instead (or nowhere), and names them as the replica set in its
// receipt.
type lie struct {
	on          bool
	host        sim.HostID
	key         store.Key
	accomplices []overlay.NodeHandle // none: drop the copies
	sent        int
}

// lyingOverlay is a host's overlay as its PAST sees it, through which
// the lie is told.
type lyingOverlay struct {
	*overlay.Overlay
	h   sim.HostID
	lie *lie
}

func (o lyingOverlay) SendDirect(to overlay.NodeHandle, payload []byte) {
	l := o.lie
	e, err := wire.DecodeEnvelope(payload)
	if !l.on || o.h != l.host || err != nil {
		o.Overlay.SendDirect(to, payload)
		return
	}
	switch e.Type {
	case wire.TypePastStore:
		var m wire.PastStore
		if wire.DecodeBody(e, e.Type, &m) == nil && m.Key == l.key && !m.Fanout {
			if len(l.accomplices) == 0 {
				return // acknowledged below, never forwarded
			}
			to = l.accomplices[l.sent%len(l.accomplices)]
			l.sent++
		}
	case wire.TypePastReceipt:
		var m wire.PastReceipt
		if wire.DecodeBody(e, e.Type, &m) == nil && m.Key == l.key {
			m.Replicas = append([]overlay.NodeHandle{o.Self()}, l.accomplices...)
			if payload, err = wire.Encode(e.Type, m); err != nil {
				panic(err)
			}
		}
	}
	o.Overlay.SendDirect(to, payload)
}

// DESIGN.md section 5, insert: the inserter accepts only receipts from a
// majority of the nodes it knows to be the k closest, so a root that
// acknowledges and drops, or that has far-away accomplices store and
// receipt the object, cannot make an insert look safe.
func TestALyingRootCannotGetAnInsertAccepted(t *testing.T) {
	sc := sim.DefaultConfig(7)
	sc.InvariantEvery = 0
	s, err := NewStorage(sc, overlay.SimConfig(), testPastConfig())
	if err != nil {
		t.Fatal(err)
	}
	l := &lie{}
	s.MakeApp = func(h sim.HostID, e env.Env, upper overlay.App) (overlay.App, func(*overlay.Overlay)) {
		app, _ := s.makeApp(h, e, upper)
		p := app.(*past.Past)
		return p, func(o *overlay.Overlay) { p.Attach(lyingOverlay{Overlay: o, h: h, lie: l}) }
	}
	hosts, err := s.BuildStorage(24, 200*env.Millisecond, 2*env.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	receipts := func(hs []sim.HostID) uint64 {
		var n uint64
		for _, h := range hs {
			n += s.Past(h).Stats().Receipts
		}
		return n
	}
	// setUp aims the lie at data's key; it returns the honest replicas
	// other than the root, the accomplices, and an inserter that is none
	// of these.
	setUp := func(data []byte, accomplices int) (honest, acc []sim.HostID, from sim.HostID) {
		key := store.ImmutableKey(data)
		byDist := s.ReplicaHosts(key, len(hosts))
		*l = lie{on: true, host: byDist[0], key: key}
		honest = byDist[1:3]
		acc = byDist[len(byDist)-accomplices:] // the farthest from the key
		for _, h := range acc {
			l.accomplices = append(l.accomplices, s.Node(h).Self())
		}
		return honest, acc, byDist[len(byDist)/2]
	}

	t.Run("acknowledges and drops", func(t *testing.T) {
		data := []byte("dropped by its root")
		honest, _, from := setUp(data, 0)
		before := receipts(honest)
		if _, err := insert(t, s, from, data); !errors.Is(err, past.ErrTimeout) {
			t.Fatalf("insert with only the root's receipt: %v, want ErrTimeout", err)
		}
		if n := receipts(honest) - before; n != 0 {
			t.Fatalf("the honest replicas sent %d receipts; the lie did not hold", n)
		}
	})

	t.Run("far-away accomplices", func(t *testing.T) {
		data := []byte("stored by the root's friends")
		honest, acc, from := setUp(data, 2)
		key := l.key
		beforeHonest, beforeAcc := receipts(honest), receipts(acc)
		bad := s.Past(from).Stats().BadReceipts
		if _, err := insert(t, s, from, data); !errors.Is(err, past.ErrTimeout) {
			t.Fatalf("insert receipted by the root and its accomplices: %v, want ErrTimeout", err)
		}
		if n := receipts(acc) - beforeAcc; n < 2 {
			t.Fatalf("the accomplices sent %d receipts, want at least 2 (the test must deliver valid ones)", n)
		}
		for _, h := range acc {
			if ok, _ := s.Disk(h).Has(store.KindImmutable, key); !ok {
				t.Fatalf("accomplice %d holds no copy", h)
			}
		}
		if n := s.Past(from).Stats().BadReceipts - bad; n != 0 {
			t.Fatalf("%d receipts failed verification; they were to be valid but not counted", n)
		}
		if n := receipts(honest) - beforeHonest; n != 0 {
			t.Fatalf("the honest replicas sent %d receipts", n)
		}

		// The same insert with an honest root is accepted, on receipts from
		// the k closest.
		l.on = false
		res, err := insert(t, s, from, data)
		if err != nil {
			t.Fatalf("honest insert: %v", err)
		}
		want := map[overlay.NodeHandle]bool{}
		for _, h := range s.ReplicaHosts(key, 3) {
			want[s.Node(h).Self()] = true
		}
		if len(res.Receipts) < 2 {
			t.Fatalf("accepted on %d receipts", len(res.Receipts))
		}
		for _, rc := range res.Receipts {
			if !want[rc.Node] {
				t.Errorf("accepted with a receipt from %s, not one of the 3 closest", rc.Node.ID.ID.Short())
			}
		}
	})
}

// DESIGN.md section 5, leases: the lease travels with an object. A node
// given a copy by maintenance keeps it for what the lease had left, not
// for a fresh lease; and a renewal a holder missed reaches it through
// maintenance's offers.
func TestTheRemainingLeaseTravelsAndRenewalsSpread(t *testing.T) {
	cfg := testPastConfig()
	s, hosts := newStorage(t, 8, 20, cfg)
	const lease, wait = 3 * env.Hour, env.Hour
	var keys []store.Key
	for i := 0; i < 40; i++ {
		res, err := insertFor(t, s, hosts[i%len(hosts)], []byte{byte(i), 5, 5}, lease)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, res.Key)
	}
	first := map[store.Key][]sim.HostID{}
	for _, k := range keys {
		first[k] = s.ReplicaHosts(k, 3)
	}
	if err := s.S.RunFor(wait); err != nil {
		t.Fatal(err)
	}
	var added []sim.HostID
	isNew := map[sim.HostID]bool{}
	for i := 0; i < 4; i++ {
		h, err := s.AddNode()
		if err != nil {
			t.Fatal(err)
		}
		added = append(added, h)
		isNew[h] = true
	}
	await(t, s, "newcomers hold their share", 30*env.Minute, func() bool {
		for _, h := range added {
			if o := s.Node(h); o == nil || !o.Active() {
				return false
			}
		}
		for _, k := range keys {
			for _, h := range s.ReplicaHosts(k, 3) {
				if ok, _ := s.Disk(h).Has(store.KindImmutable, k); !ok {
					return false
				}
			}
		}
		return true
	})
	// Each newcomer's copy has the lease its first holders have left
	// (their tick counters lag by up to a TickPeriod), about
	// lease - wait, not a fresh lease.
	moved := 0
	for _, k := range keys {
		old := remaining(t, s, first[k][0], k)
		for _, h := range s.ReplicaHosts(k, 3) {
			if !isNew[h] {
				continue
			}
			moved++
			got := remaining(t, s, h, k)
			if d := got - old; d < -2*cfg.TickPeriod || d > 2*cfg.TickPeriod {
				t.Errorf("key %s: newcomer %d keeps it %v s, its first holder %v s", k.Short(), h, got.Seconds(), old.Seconds())
			}
			if got > lease-wait {
				t.Errorf("key %s: newcomer %d was given %v s, more than the %v s left", k.Short(), h, got.Seconds(), (lease - wait).Seconds())
			}
		}
	}
	if moved == 0 {
		t.Fatal("no key moved to a newcomer; the test checks nothing")
	}

	// A holder that is down while its object is renewed learns the new
	// lease from the others' offers once it is back.
	key := keys[0]
	set := s.ReplicaHosts(key, 3)
	away, from := set[2], hosts[len(hosts)/2]
	for from == set[0] || from == set[1] || from == away {
		from++
	}
	s.Crash(away)
	if err := s.S.RunFor(env.Minute); err != nil {
		t.Fatal(err)
	}
	const renewed = 10 * env.Hour
	var renewErr error
	done := false
	s.Past(from).Renew(store.KindImmutable, key, renewed, func(_ past.InsertResult, err error) { renewErr, done = err, true })
	await(t, s, "renewal", time1m, func() bool { return done })
	if renewErr != nil {
		t.Fatal(renewErr)
	}
	if got := remaining(t, s, away, key); got > lease-wait {
		t.Fatalf("the absent holder's lease is %v s before it is back", got.Seconds())
	}
	s.S.Restart(away)
	await(t, s, "the renewal reaches the returning holder", env.Duration(cfg.FullSyncRounds+2)*cfg.MaintainPeriod, func() bool {
		return s.S.Up(away) && remaining(t, s, away, key) > renewed-env.Hour
	})
}

// An insert that starts just as two of its replicas fail gets only the
// root's receipt on its first attempt, and the root named the failed
// nodes as replicas. A later attempt reaches the replica set as it is
// then, and its receipts are accepted: the names from the first attempt
// do not hold acceptance back.
func TestAnInsertRacingReplicaFailuresIsAcceptedByALaterAttempt(t *testing.T) {
	cfg := testPastConfig()
	// Attempts 80 s apart: the overlay notices a failure within about a
	// minute (SuspectAfter and a probe).
	cfg.InsertTimeout = 4 * env.Minute
	s, hosts := newStorage(t, 9, 20, cfg)
	data := []byte("inserted as its replicas fail")
	key := store.ImmutableKey(data)
	set := s.ReplicaHosts(key, 3)
	from := hosts[0]
	for slices.Contains(set, from) {
		from++
	}
	s.Crash(set[1])
	s.Crash(set[2])
	var res past.InsertResult
	err := errors.New("not done")
	s.Past(from).Insert(data, past.LeaseMailbox, func(r past.InsertResult, e error) { res, err = r, e })
	if err := s.S.RunFor(cfg.InsertTimeout); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("insert: %v", err)
	}
	want := s.ReplicaHosts(key, 3) // the live replica set now
	if want[0] != set[0] {
		t.Fatalf("the root changed: %d, was %d", want[0], set[0])
	}
	for _, rc := range res.Receipts {
		if ok := slices.ContainsFunc(want, func(h sim.HostID) bool { return s.Node(h).Self().ID == rc.Node.ID }); !ok {
			t.Errorf("accepted on a receipt from %s, not one of the 3 closest live nodes", rc.Node.ID.ID.Short())
		}
	}
}
