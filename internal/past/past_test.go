package past

import (
	"bytes"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"syscall"
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/sim"
	store "github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

type rr struct{ r *mrand.Rand }

func (r rr) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r.r.Uint32())
	}
	return len(p), nil
}

func newRand(seed uint64) rr { return rr{mrand.New(mrand.NewPCG(seed, 7))} }

// single runs one PAST node that forms a ring of its own on the
// simulator.
type single struct {
	s    *sim.Sim
	p    *Past
	disk *MemStorage
	ca   *identity.CA
	r    rr
}

func newSingle(t testing.TB) *single {
	t.Helper()
	r := newRand(1)
	ca, err := identity.NewCA(r)
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.GenerateNodeKey(r)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueNode(r, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	cfg := sim.DefaultConfig(1)
	cfg.InvariantEvery = 0
	x := &single{s: sim.New(cfg), disk: NewMemStorage(), ca: ca, r: r}
	x.s.Add(func(e env.Env) sim.Process {
		x.disk.SetClock(e.Clock)
		p, err := New(DefaultConfig(), e, x.disk, Identity{Key: key, Cert: cert, Verifier: identity.NewVerifier(ca.Public())}, nil)
		if err != nil {
			t.Fatal(err)
		}
		o := overlay.New(overlay.DefaultConfig(), e, overlay.NodeHandle{ID: cert.NodeID, Addr: string(e.Self)}, p)
		p.Attach(o)
		o.Create()
		x.p = p
		return o
	})
	return x
}

func (x *single) run(t testing.TB, d env.Duration) {
	t.Helper()
	if err := x.s.RunFor(d); err != nil {
		t.Fatal(err)
	}
}

func TestSlotMerge(t *testing.T) {
	m := func(v uint64, d string) *Mutable {
		return &Mutable{Address: "a@b.c", Name: "n", Version: v, Data: []byte(d), Sig: []byte(d)}
	}
	var s slot
	s, changed, err := s.merge(m(1, "x"), 2)
	if !changed || err != nil || s.version() != 1 {
		t.Fatalf("first: %v %v %d", changed, err, s.version())
	}
	if _, changed, err = s.merge(m(1, "x"), 2); changed || err != nil {
		t.Fatalf("same again: changed %v, %v", changed, err)
	}
	if s, changed, _ = s.merge(m(2, "y"), 2); !changed || len(s) != 1 || s.version() != 2 {
		t.Fatalf("newer: %d objects at %d", len(s), s.version())
	}
	if _, _, err = s.merge(m(1, "x"), 2); !errors.Is(err, ErrRollback) {
		t.Fatalf("older: %v, want ErrRollback", err)
	}
	if s, changed, _ = s.merge(m(2, "z"), 2); !changed || len(s) != 2 {
		t.Fatalf("fork: %d objects", len(s))
	}
	if _, changed, _ = s.merge(m(2, "w"), 2); changed {
		t.Fatal("a third fork beyond MaxForks was kept")
	}
	b := encodeSlot(s)
	back, err := decodeSlot(b)
	if err != nil || len(back) != 2 || !back[1].Equal(s[1]) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := decodeSlot(wire.MustMarshal([]*Mutable{m(1, "a"), m(2, "b")})); err == nil {
		t.Fatal("a slot mixing versions decoded")
	}
}

func TestMutableSignatureAndKeyBinding(t *testing.T) {
	r := newRand(2)
	ca, _ := identity.NewCA(r)
	v := identity.NewVerifier(ca.Public())
	keys, _ := identity.GenerateUserKeys(r, "bob@demo.epost")
	cert, err := ca.IssueUser(r, "bob@demo.epost", keys.Signing.Public(), keys.Sealing.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	m, err := SignMutable(keys, cert, "head/Sent", 5, []byte("log head"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := m.Verify(v)
	if err != nil || k != MutableKey(id.ForUser("bob@demo.epost"), "head/Sent") || k != m.Key() {
		t.Fatalf("verify: %v", err)
	}
	for name, tamper := range map[string]func(*Mutable){
		"data":    func(x *Mutable) { x.Data = []byte("other") },
		"version": func(x *Mutable) { x.Version++ },
		"name":    func(x *Mutable) { x.Name = "head/INBOX" },
		"address": func(x *Mutable) { x.Address = "eve@demo.epost" },
		"sig":     func(x *Mutable) { x.Sig = bytes.Clone(x.Sig); x.Sig[3] ^= 1 },
	} {
		x := *m
		tamper(&x)
		if _, err := x.Verify(v); !errors.Is(err, ErrBadObject) {
			t.Errorf("tampered %s: %v, want ErrBadObject", name, err)
		}
	}
	other, _ := identity.NewCA(r)
	if _, err := m.Verify(identity.NewVerifier(other.Public())); err == nil {
		t.Error("verified against another community's CA")
	}
	back, err := DecodeMutable(m.Encode())
	if err != nil || !back.Equal(m) {
		t.Fatalf("round trip: %v", err)
	}
}

func TestMemStorageKeysInRingOrderAndSweep(t *testing.T) {
	d := NewMemStorage()
	var keys []store.Key
	for i := 0; i < 50; i++ {
		data := []byte{byte(i), byte(i * 7)}
		k := store.ImmutableKey(data)
		keys = append(keys, k)
		d.PutAsync(store.KindImmutable, k, data, env.Time(i), func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	var walked []store.Key
	var after *store.Key
	for {
		got, more, err := d.Keys(store.KindImmutable, store.Range{}, after, 7)
		if err != nil {
			t.Fatal(err)
		}
		walked = append(walked, got...)
		if !more {
			break
		}
		after = &got[len(got)-1]
	}
	if len(walked) != 50 {
		t.Fatalf("walked %d keys, want 50", len(walked))
	}
	for i := 1; i < len(walked); i++ {
		if bytes.Compare(walked[i-1][:], walked[i][:]) >= 0 {
			t.Fatal("keys out of ring order")
		}
	}
	if err := d.SetTicks(25); err != nil {
		t.Fatal(err)
	}
	rep, err := d.Sweep(10)
	if err != nil || len(rep.Removed) != 10 || !rep.More {
		t.Fatalf("sweep: %d removed, more %v, %v", len(rep.Removed), rep.More, err)
	}
	rep, _ = d.Sweep(100)
	if len(rep.Removed) != 16 || d.Len() != 24 {
		t.Fatalf("second sweep removed %d, %d left; want 16 and 24", len(rep.Removed), d.Len())
	}
	if err := d.SetTicks(3); err == nil {
		t.Fatal("ticks went backwards")
	}
}

func TestSingleNodeInsertLookupRenew(t *testing.T) {
	x := newSingle(t)
	x.run(t, env.Second)
	var res InsertResult
	var ierr error
	done := false
	key := x.p.Insert([]byte("hello"), env.Hour, func(r InsertResult, err error) { res, ierr, done = r, err, true })
	x.run(t, env.Second)
	if !done || ierr != nil || res.Key != key || len(res.Receipts) != 1 {
		t.Fatalf("insert: done %v, %v, %d receipts", done, ierr, len(res.Receipts))
	}
	exp, err := x.disk.Lease(store.KindImmutable, key)
	if err != nil {
		t.Fatal(err)
	}
	done = false
	x.p.Renew(store.KindImmutable, key, 3*env.Hour, func(r InsertResult, err error) { ierr, done = err, true })
	x.run(t, env.Second)
	exp2, _ := x.disk.Lease(store.KindImmutable, key)
	if !done || ierr != nil || exp2 <= exp {
		t.Fatalf("renew: done %v, %v, expiry %d -> %d", done, ierr, exp, exp2)
	}
	done = false
	x.p.Renew(store.KindImmutable, store.ImmutableKey([]byte("absent")), env.Hour, func(r InsertResult, err error) { ierr, done = err, true })
	x.run(t, env.Second)
	if !done || !errors.Is(ierr, ErrRefused) {
		t.Fatalf("renewing a missing object: %v, want ErrRefused", ierr)
	}
	// After the lease runs out the sweep reclaims the object.
	x.run(t, 3*env.Hour+2*env.Minute)
	if ok, _ := x.disk.Has(store.KindImmutable, key); ok {
		t.Fatal("object outlived its lease")
	}
	if x.p.Stats().Swept != 1 {
		t.Fatalf("swept %d, want 1", x.p.Stats().Swept)
	}
}

// storeMsg builds a PastStore as another node would send it.
func storeMsg(data []byte, key store.Key, kind store.Kind, lease env.Duration) []byte {
	b, _ := wire.Encode(wire.TypePastStore, wire.PastStore{Req: 1, Origin: overlay.NodeHandle{Addr: "nowhere"}, Kind: uint8(kind), Key: key, Data: data, Lease: int64(lease)})
	return b
}

func TestBadInputIsRefusedAndCounted(t *testing.T) {
	x := newSingle(t)
	x.run(t, env.Second)
	peer := overlay.NodeHandle{ID: id.NodeID{ID: id.FromUint64(1, 2)}, Addr: "peer"}
	good := []byte("good")
	x.p.Direct(peer, storeMsg(good, store.ImmutableKey([]byte("other")), store.KindImmutable, env.Hour))
	x.p.Direct(peer, storeMsg(good, store.ImmutableKey(good), store.KindImmutable, -5))
	x.p.Direct(peer, storeMsg(good, store.ImmutableKey(good), store.KindImmutable, 10*365*Day))
	big := make([]byte, DefaultConfig().MaxObjectSize+1)
	x.p.Direct(peer, storeMsg(big, store.ImmutableKey(big), store.KindImmutable, env.Hour))
	x.p.Direct(peer, storeMsg([]byte("not a mutable"), store.ImmutableKey(good), store.KindMutable, env.Hour))
	x.p.Direct(peer, []byte{0xff, 0x00})
	bad, _ := wire.Encode(wire.TypePastReceipt, wire.PastReceipt{Req: 99})
	x.p.Direct(peer, bad)
	x.run(t, env.Second)
	st := x.p.Stats()
	if st.Refused[RefusedHash] != 1 || st.Refused[RefusedLease] != 2 || st.Refused[RefusedTooLarge] != 1 || st.Refused[RefusedMalformed] != 1 {
		t.Fatalf("refusals %v", st.Refused)
	}
	if x.disk.Len() != 0 {
		t.Fatalf("%d objects stored from bad input", x.disk.Len())
	}
	// A receipt for a real insert with a forged signature does not count.
	done := false
	var ierr error
	x.p.cfg.InsertTimeout = 3 * env.Second
	key := x.p.Insert([]byte("x"), env.Hour, func(_ InsertResult, err error) { ierr, done = err, true })
	forged := wire.PastReceipt{Req: x.p.nextReq, Kind: uint8(store.KindImmutable), Key: key, Node: peer, Cert: x.p.ident.Cert.Bytes(), Sig: make([]byte, 64)}
	fb, _ := wire.Encode(wire.TypePastReceipt, forged)
	x.p.Direct(peer, fb)
	if x.p.Stats().BadReceipts != 1 {
		t.Fatalf("bad receipts %d, want 1", x.p.Stats().BadReceipts)
	}
	x.run(t, 5*env.Second)
	if !done || ierr != nil {
		t.Fatalf("the genuine insert: %v", ierr)
	}
}

func FuzzDirect(f *testing.F) {
	x := newSingle(f)
	x.run(f, env.Second)
	good := []byte("seed")
	f.Add(storeMsg(good, store.ImmutableKey(good), store.KindImmutable, env.Hour))
	for _, t := range []wire.Type{wire.TypePastOffer, wire.TypePastWant, wire.TypePastPush, wire.TypePastObject, wire.TypePastLookup, wire.TypePastFetch} {
		b, _ := wire.Encode(t, []any{})
		f.Add(b)
	}
	peer := overlay.NodeHandle{ID: id.NodeID{ID: id.FromUint64(3, 4)}, Addr: "peer"}
	f.Fuzz(func(t *testing.T, b []byte) {
		x.p.Direct(peer, b)
		x.p.Deliver(overlay.Message{Key: id.FromUint64(5, 6), Src: peer, Payload: b})
		m := overlay.Message{Key: id.FromUint64(5, 6), Src: peer, Payload: b}
		x.p.Forward(&m, peer)
		if err := x.s.RunFor(10 * env.Millisecond); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAnotherUserCannotWriteMyObjects(t *testing.T) {
	x := newSingle(t)
	x.run(t, env.Second)
	mk := func(addr string) (identity.UserKeys, *identity.UserCert) {
		keys, _ := identity.GenerateUserKeys(x.r, addr)
		cert, err := x.ca.IssueUser(x.r, addr, keys.Signing.Public(), keys.Sealing.Recipient())
		if err != nil {
			t.Fatal(err)
		}
		return keys, cert
	}
	_, alice := mk("alice@demo.epost")
	bobKeys, bob := mk("bob@demo.epost")
	aliceHead := MutableKey(alice.UserID, "head/INBOX")
	// Bob signs a perfectly valid object of his own with the same name...
	m, err := SignMutable(bobKeys, bob, "head/INBOX", 99, []byte("bob's log"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Key() == aliceHead {
		t.Fatal("two users' objects share a key")
	}
	// ...and offers it under Alice's key: refused, nothing stored.
	peer := overlay.NodeHandle{ID: id.NodeID{ID: id.FromUint64(7, 7)}, Addr: "peer"}
	x.p.Direct(peer, storeMsg(m.Encode(), aliceHead, store.KindMutable, env.Hour))
	// Claiming to be Alice with Bob's certificate fails too.
	forged := *m
	forged.Address = "alice@demo.epost"
	x.p.Direct(peer, storeMsg(forged.Encode(), aliceHead, store.KindMutable, env.Hour))
	x.run(t, env.Second)
	if got := x.p.Stats().Refused[RefusedSignature]; got != 2 {
		t.Fatalf("refused %d as bad signatures, want 2", got)
	}
	if ok, _ := x.disk.Has(store.KindMutable, aliceHead); ok {
		t.Fatal("something was stored under Alice's key")
	}
}

// TestFullDiskRefusesWithoutReceipt: a replica whose disk is full (or
// failing) refuses to store and sends no receipt, so no inserter counts
// it; an insert this node's own full disk fails says so (errors.Is
// store.ErrFull); once there is room again the same insert succeeds.
func TestFullDiskRefusesWithoutReceipt(t *testing.T) {
	x := newSingle(t)
	x.run(t, env.Second)
	x.disk.Fail = fmt.Errorf("%w: %w", store.ErrFull, syscall.ENOSPC)
	peer := overlay.NodeHandle{ID: id.NodeID{ID: id.FromUint64(1, 2)}, Addr: "peer"}
	data := []byte("a chunk of mail")
	x.p.Direct(peer, storeMsg(data, store.ImmutableKey(data), store.KindImmutable, env.Hour))
	x.run(t, env.Second)
	st := x.p.Stats()
	if st.Receipts != 0 || st.Refused[RefusedStore] != 1 || st.StoreErrors != 1 || x.disk.Len() != 0 {
		t.Fatalf("full disk: %d receipts, %d store refusals, %d store errors, %d objects", st.Receipts, st.Refused[RefusedStore], st.StoreErrors, x.disk.Len())
	}

	var ierr error
	done := false
	x.p.Insert(data, env.Hour, func(_ InsertResult, err error) { ierr, done = err, true })
	x.run(t, env.Second)
	if !done || !errors.Is(ierr, ErrRefused) || !errors.Is(ierr, store.ErrFull) || !errors.Is(ierr, syscall.ENOSPC) {
		t.Fatalf("insert on a full disk: done %v, %v", done, ierr)
	}
	if st := x.p.Stats(); st.Receipts != 0 {
		t.Fatalf("%d receipts sent from a full disk", st.Receipts)
	}

	x.disk.Fail = nil
	done = false
	x.p.Insert(data, env.Hour, func(_ InsertResult, err error) { ierr, done = err, true })
	x.run(t, env.Second)
	if !done || ierr != nil || x.disk.Len() != 1 {
		t.Fatalf("insert once there is room: done %v, %v, %d objects", done, ierr, x.disk.Len())
	}
}

// TestVerifyNodeRotatedAndRevoked checks the node-certificate cache: a
// node whose key was rotated (same NodeID, new key) is believed with its
// new certificate, and a certificate stops counting once revoked.
func TestVerifyNodeRotatedAndRevoked(t *testing.T) {
	x := newSingle(t)
	oldKey, err := identity.GenerateNodeKey(x.r)
	if err != nil {
		t.Fatal(err)
	}
	oldCert, err := x.ca.IssueNode(x.r, oldKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	newKey, err := identity.GenerateNodeKey(x.r)
	if err != nil {
		t.Fatal(err)
	}
	newCert, err := x.ca.ReissueNode(x.r, newKey.Public(), oldCert.NodeID)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := x.p.verifyNode(oldCert.NodeID, oldCert.Bytes()); !ok || k != oldKey.Public() {
		t.Fatalf("old certificate: ok=%v, key matches=%v", ok, k == oldKey.Public())
	}
	if k, ok := x.p.verifyNode(newCert.NodeID, newCert.Bytes()); !ok || k != newKey.Public() {
		t.Fatalf("rotated certificate: ok=%v, key matches=%v (the old key was cached)", ok, k == newKey.Public())
	}
	rev, err := x.ca.IssueRevocation(1, []identity.Serial{oldCert.Serial})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.p.ident.Verifier.Adopt(rev.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, ok := x.p.verifyNode(oldCert.NodeID, oldCert.Bytes()); ok {
		t.Fatal("a revoked certificate still verifies")
	}
	if k, ok := x.p.verifyNode(newCert.NodeID, newCert.Bytes()); !ok || k != newKey.Public() {
		t.Fatalf("rotated certificate after revoking the old one: ok=%v", ok)
	}
}

// The in-memory store's scrub walks every entry once per pass, a batch at
// a time from the cursor it returned, and drops exactly the damaged ones,
// of any kind, as the real store's does.
func TestMemStorageScrubWalksInBatchesAndDropsDamage(t *testing.T) {
	d := NewMemStorage()
	put := func(kind store.Kind, key store.Key, data []byte) {
		d.PutAsync(kind, key, data, 1000, func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	var imm []store.Key
	for i := 0; i < 9; i++ {
		data := []byte{byte(i), 3}
		imm = append(imm, store.ImmutableKey(data))
		put(store.KindImmutable, imm[i], data)
	}
	mut := store.Key{7}
	put(store.KindMutable, mut, []byte("a signed slot"))
	put(store.KindFragment, store.Key{9}, []byte("a fragment"))
	d.Corrupt(store.KindImmutable, imm[4])
	d.Corrupt(store.KindMutable, mut)

	pass := func() (checked int, dropped []store.Entry, calls int) {
		var c store.ScrubCursor
		for {
			calls++
			var rep store.ScrubReport
			d.ScrubAsync(c, 3, func(r store.ScrubReport, err error) {
				if err != nil {
					t.Fatal(err)
				}
				rep = r
			})
			if rep.Checked > 3 {
				t.Fatalf("a batch of 3 checked %d", rep.Checked)
			}
			checked += rep.Checked
			dropped = append(dropped, rep.Dropped...)
			if rep.PassDone {
				return
			}
			c = rep.Next
		}
	}
	checked, dropped, calls := pass()
	if checked != 11 || calls != 4 {
		t.Fatalf("pass checked %d entries in %d calls, want 11 in 4", checked, calls)
	}
	want := []store.Entry{{Kind: store.KindImmutable, Key: imm[4]}, {Kind: store.KindMutable, Key: mut}}
	if fmt.Sprint(dropped) != fmt.Sprint(want) {
		t.Fatalf("dropped %v, want %v", dropped, want)
	}
	if d.Len() != 9 {
		t.Fatalf("%d entries left, want 9", d.Len())
	}
	if checked, dropped, _ = pass(); checked != 9 || len(dropped) != 0 {
		t.Fatalf("second pass checked %d, dropped %v; want 9 and none", checked, dropped)
	}
}
