package store

import (
	"bytes"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
)

func TestPutGetSurvivesReopen(t *testing.T) {
	s, path := openTemp(t, DefaultConfig())
	type obj struct {
		kind Kind
		key  Key
		data []byte
	}
	var objs []obj
	for i, n := range []int{0, 1, 100, 4096, 10240, 300000} {
		d := payload(uint64(i), n)
		objs = append(objs, obj{KindImmutable, ImmutableKey(d), d})
		m := payload(uint64(100+i), n)
		objs = append(objs, obj{KindMutable, ringKey(uint64(i), 0, 1), m})
	}
	var bytesWant int64
	for _, o := range objs {
		mustPut(t, s, o.kind, o.key, o.data, 1000)
		bytesWant += int64(len(o.data))
	}
	for _, o := range objs {
		mustGet(t, s, o.kind, o.key, o.data)
	}
	st := s.Stats()
	if st.Objects != int64(len(objs)) || st.Bytes != bytesWant {
		t.Fatalf("stats %+v, want %d objects %d bytes", st, len(objs), bytesWant)
	}
	checkInvariants(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, DefaultConfig())
	for _, o := range objs {
		mustGet(t, s, o.kind, o.key, o.data)
		if ok, err := s.Has(o.kind, o.key); !ok || err != nil {
			t.Fatalf("has %v: %v %v", Entry{Kind: o.kind, Key: o.key}, ok, err)
		}
	}
	if got := s.Stats(); got.Objects != st.Objects || got.Bytes != st.Bytes {
		t.Fatalf("stats after reopen %+v, before %+v", got, st)
	}
	checkInvariants(t, s)
}

func TestGetMissing(t *testing.T) {
	s, _ := openTemp(t, DefaultConfig())
	_, err := s.Get(KindImmutable, Key{1})
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("get missing: %v", err)
	}
	if _, err := s.Lease(KindMutable, Key{1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lease missing: %v", err)
	}
	if ok, err := s.Has(KindMutable, Key{1}); ok || err != nil {
		t.Fatalf("has missing: %v %v", ok, err)
	}
	if err := s.ExtendLease(KindImmutable, Key{1}, 5); !errors.Is(err, ErrNotFound) {
		t.Fatalf("extend missing: %v", err)
	}
	if err := s.Delete(KindImmutable, Key{1}); err != nil {
		t.Fatalf("delete missing: %v", err)
	}
}

func TestWritesRefused(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxObjectSize = 1000
	s, _ := openTemp(t, cfg)
	d := payload(1, 10)
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"invalid kind", s.Put(KindInvalid, ImmutableKey(d), d, 1), ErrInvalid},
		{"meta kind", s.Put(kindMeta, ImmutableKey(d), d, 1), ErrInvalid},
		{"wrong hash", s.Put(KindImmutable, Key{9}, d, 1), ErrInvalid},
		{"negative expiry", s.Put(KindMutable, Key{9}, d, -1), ErrInvalid},
		{"too large", s.Put(KindMutable, Key{9}, make([]byte, 1001), 1), ErrTooLarge},
		{"too large immutable", s.Put(KindImmutable, ImmutableKey(make([]byte, 1001)), make([]byte, 1001), 1), ErrTooLarge},
		{"meta too large", s.SetMeta("x", make([]byte, 1001)), ErrTooLarge},
		{"meta empty name", s.SetMeta("", nil), ErrInvalid},
		{"ticks negative", s.SetTicks(-1), ErrInvalid},
		{"ticks forever", s.SetTicks(Forever), ErrInvalid},
		{"extend invalid kind", s.ExtendLease(KindInvalid, Key{}, 1), ErrInvalid},
	}
	for _, c := range cases {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.err, c.want)
		}
	}
	mustPut(t, s, KindMutable, Key{9}, make([]byte, 1000), 1) // exactly the limit
	if st := s.Stats(); st.Objects != 1 {
		t.Fatalf("refused writes changed the store: %+v", st)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "x.db"), Config{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("open with zero config: %v", err)
	}
}

func TestMutableReplaceAndLeaseNeverShrinks(t *testing.T) {
	s, _ := openTemp(t, DefaultConfig())
	k := ringKey(7, 7, 7)
	mustPut(t, s, KindMutable, k, payload(1, 100), 50)
	mustPut(t, s, KindMutable, k, payload(2, 300), 20)
	mustGet(t, s, KindMutable, k, payload(2, 300))
	if exp, err := s.Lease(KindMutable, k); err != nil || exp != 50 {
		t.Fatalf("lease after shorter put: %d %v, want 50", exp, err)
	}
	if err := s.ExtendLease(KindMutable, k, 40); err != nil {
		t.Fatal(err)
	}
	if exp, _ := s.Lease(KindMutable, k); exp != 50 {
		t.Fatalf("lease shrank to %d", exp)
	}
	if err := s.ExtendLease(KindMutable, k, 90); err != nil {
		t.Fatal(err)
	}
	if exp, _ := s.Lease(KindMutable, k); exp != 90 {
		t.Fatalf("lease %d, want 90", exp)
	}
	d := payload(3, 64)
	mustPut(t, s, KindImmutable, ImmutableKey(d), d, 10)
	mustPut(t, s, KindImmutable, ImmutableKey(d), d, 30) // same bytes again: lease grows
	if exp, _ := s.Lease(KindImmutable, ImmutableKey(d)); exp != 30 {
		t.Fatalf("immutable lease %d, want 30", exp)
	}
	st := s.Stats()
	if st.Objects != 2 || st.Bytes != 300+64 {
		t.Fatalf("stats %+v", st)
	}
	checkInvariants(t, s)
}

func TestTicksPersistAndNeverGoBack(t *testing.T) {
	s, path := openTemp(t, DefaultConfig())
	if s.Ticks() != 0 {
		t.Fatalf("fresh store at tick %d", s.Ticks())
	}
	for _, tk := range []env.Time{5, 5, 1000, env.Time(env.Hour)} {
		if err := s.SetTicks(tk); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetTicks(999); !errors.Is(err, ErrInvalid) {
		t.Fatalf("backwards: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, DefaultConfig())
	if got := s.Ticks(); got != env.Time(env.Hour) {
		t.Fatalf("ticks after reopen %d", got)
	}
}

func TestSweepRemovesExpiredByTicks(t *testing.T) {
	s, _ := openTemp(t, DefaultConfig())
	type obj struct {
		e    Entry
		exp  env.Time
		size int
	}
	var objs []obj
	for i := range 40 {
		d := payload(uint64(i), 10+i)
		e := Entry{Kind: KindImmutable, Key: ImmutableKey(d)}
		if i%2 == 1 {
			e = Entry{Kind: KindMutable, Key: ringKey(uint64(i), 0, 0)}
		}
		exp := env.Time(10 * (i % 8)) // 0, 10, ..., 70
		if i == 39 {
			exp = Forever
		}
		mustPut(t, s, e.Kind, e.Key, d, exp)
		objs = append(objs, obj{e, exp, len(d)})
	}
	// Extending a lease moves its index entry.
	if err := s.ExtendLease(objs[0].e.Kind, objs[0].e.Key, 1000); err != nil {
		t.Fatal(err)
	}
	objs[0].exp = 1000
	for _, now := range []env.Time{0, 9, 10, 35, 70, 1000, Forever - 1} {
		if err := s.SetTicks(now); err != nil {
			t.Fatal(err)
		}
		var removed []Removed
		for {
			rep, err := s.Sweep(3)
			if err != nil {
				t.Fatal(err)
			}
			var sum int64
			for _, r := range rep.Removed {
				sum += r.Size
			}
			if sum != rep.Bytes {
				t.Fatalf("sweep bytes %d, sizes add to %d", rep.Bytes, sum)
			}
			removed = append(removed, rep.Removed...)
			if !rep.More {
				break
			}
		}
		var want []Entry
		var rest []obj
		for _, o := range objs {
			if o.exp <= now {
				want = append(want, o.e)
			} else {
				rest = append(rest, o)
			}
		}
		objs = rest
		var got []Entry
		for i, r := range removed {
			got = append(got, r.Entry)
			if i > 0 && r.Expiry < removed[i-1].Expiry {
				t.Fatalf("sweep out of expiry order")
			}
			if r.Expiry > now {
				t.Fatalf("swept %v with lease to %d at tick %d", r.Entry, r.Expiry, now)
			}
		}
		cmpEntries := func(a, b Entry) int {
			return bytes.Compare(append([]byte{byte(a.Kind)}, a.Key[:]...), append([]byte{byte(b.Kind)}, b.Key[:]...))
		}
		slices.SortFunc(got, cmpEntries)
		slices.SortFunc(want, cmpEntries)
		if !slices.Equal(got, want) {
			t.Fatalf("tick %d: swept %v, want %v", now, got, want)
		}
		for _, o := range objs {
			if ok, _ := s.Has(o.e.Kind, o.e.Key); !ok {
				t.Fatalf("tick %d: %v (lease %d) gone", now, o.e, o.exp)
			}
		}
		checkInvariants(t, s)
	}
	if st := s.Stats(); st.Objects != 1 || st.Expired != 39 {
		t.Fatalf("after sweeping: %+v", st)
	}
}

func TestMeta(t *testing.T) {
	s, path := openTemp(t, DefaultConfig())
	if _, err := s.GetMeta("uid/alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing meta: %v", err)
	}
	if err := s.SetMeta("uid/alice", []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMeta("empty", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, DefaultConfig())
	if v, err := s.GetMeta("uid/alice"); err != nil || !bytes.Equal(v, []byte{1, 2, 3}) {
		t.Fatalf("meta after reopen: %v %v", v, err)
	}
	if v, err := s.GetMeta("empty"); err != nil || len(v) != 0 {
		t.Fatalf("empty meta: %v %v", v, err)
	}
	if err := s.DeleteMeta("uid/alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMeta("uid/alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted meta: %v", err)
	}
	rawUpdate(t, s, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketMeta))
		v := bytes.Clone(b.Get([]byte("empty")))
		v[5] ^= 1
		return b.Put([]byte("empty"), v)
	})
	if _, err := s.GetMeta("empty"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged meta: %v", err)
	}
	if st := s.Stats(); st.Objects != 0 {
		t.Fatalf("metadata counted as objects: %+v", st)
	}
}

// damage is one way stored bytes go bad.
type damage struct {
	name string
	fn   func(tx *bolt.Tx, e Entry) error
}

func damages() []damage {
	obj := func(tx *bolt.Tx, e Entry, f func([]byte) []byte) error {
		b := tx.Bucket(objectBucket(e.Kind))
		return b.Put(e.Key[:], f(bytes.Clone(b.Get(e.Key[:]))))
	}
	return []damage{
		{"flipped data bit", func(tx *bolt.Tx, e Entry) error {
			return obj(tx, e, func(v []byte) []byte { v[len(v)-1] ^= 0x10; return v })
		}},
		{"flipped checksum bit", func(tx *bolt.Tx, e Entry) error {
			return obj(tx, e, func(v []byte) []byte { v[3] ^= 0x01; return v })
		}},
		{"truncated record", func(tx *bolt.Tx, e Entry) error {
			return obj(tx, e, func(v []byte) []byte { return v[:objectHeader-1] })
		}},
		{"truncated data", func(tx *bolt.Tx, e Entry) error {
			return obj(tx, e, func(v []byte) []byte { return v[:len(v)-1] })
		}},
		{"wrong version", func(tx *bolt.Tx, e Entry) error {
			return obj(tx, e, func(v []byte) []byte { v[0] = 9; return v })
		}},
		{"wrong kind", func(tx *bolt.Tx, e Entry) error {
			return obj(tx, e, func(v []byte) []byte { v[1] ^= 3; return v })
		}},
		{"garbled lease", func(tx *bolt.Tx, e Entry) error {
			return tx.Bucket([]byte(bucketLease)).Put(leaseKey(e.Kind, e.Key), []byte{0xff, 0x00})
		}},
		{"missing lease", func(tx *bolt.Tx, e Entry) error {
			return tx.Bucket([]byte(bucketLease)).Delete(leaseKey(e.Kind, e.Key))
		}},
	}
}

func TestCorruptEntryDroppedOnRead(t *testing.T) {
	for _, d := range damages() {
		for _, kind := range allKinds() {
			t.Run(fmt.Sprintf("%s/%v", d.name, kind), func(t *testing.T) {
				s, _ := openTemp(t, DefaultConfig())
				data := payload(1, 200)
				good := payload(2, 50)
				e := Entry{Kind: kind, Key: ImmutableKey(data)}
				mustPut(t, s, kind, e.Key, data, 100)
				mustPut(t, s, KindImmutable, ImmutableKey(good), good, 100)
				rawUpdate(t, s, func(tx *bolt.Tx) error { return d.fn(tx, e) })

				var err error
				if d.name == "garbled lease" || d.name == "missing lease" {
					_, err = s.Lease(kind, e.Key)
				} else {
					_, err = s.Get(kind, e.Key)
				}
				if !isBoth(err, ErrCorrupt, ErrNotFound) {
					t.Fatalf("read of damaged entry: %v", err)
				}
				if err := s.Flush(); err != nil { // the drop is queued before this
					t.Fatal(err)
				}
				if ok, _ := s.Has(kind, e.Key); ok {
					t.Fatal("damaged entry still present")
				}
				if _, err := s.Get(kind, e.Key); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) {
					t.Fatalf("second read: %v", err)
				}
				st := s.Stats()
				if st.Corrupt != 1 || st.Objects != 1 || st.Bytes != 50 {
					t.Fatalf("stats after drop: %+v", st)
				}
				mustGet(t, s, KindImmutable, ImmutableKey(good), good)
				// Replica maintenance restores it.
				mustPut(t, s, kind, e.Key, data, 100)
				mustGet(t, s, kind, e.Key, data)
				checkInvariants(t, s)
			})
		}
	}
}

func TestPutOverDamagedEntryRepairsIt(t *testing.T) {
	for _, d := range damages() {
		for _, kind := range allKinds() {
			t.Run(fmt.Sprintf("%s/%v", d.name, kind), func(t *testing.T) {
				s, _ := openTemp(t, DefaultConfig())
				data := payload(1, 500)
				e := Entry{Kind: kind, Key: ImmutableKey(data)}
				mustPut(t, s, kind, e.Key, data, 10)
				rawUpdate(t, s, func(tx *bolt.Tx) error { return d.fn(tx, e) })
				mustPut(t, s, kind, e.Key, data, 20)
				mustGet(t, s, kind, e.Key, data)
				if exp, err := s.Lease(kind, e.Key); err != nil || exp < 20 {
					t.Fatalf("lease after repair: %d %v", exp, err)
				}
				checkInvariants(t, s)
			})
		}
	}
}

func TestScrubFindsAndDropsDamage(t *testing.T) {
	s, _ := openTemp(t, DefaultConfig())
	var all []Entry
	for i := range 60 {
		d := payload(uint64(i), 100+i)
		e := Entry{Kind: KindImmutable, Key: ImmutableKey(d)}
		if i%3 == 0 {
			e = Entry{Kind: KindMutable, Key: ImmutableKey(append(d, 'm'))}
		}
		mustPut(t, s, e.Kind, e.Key, d, 100)
		all = append(all, e)
	}
	ds := damages()
	bad := map[Entry]bool{}
	for i := 0; i < len(all); i += 7 {
		e := all[i]
		bad[e] = true
		rawUpdate(t, s, func(tx *bolt.Tx) error { return ds[i%len(ds)].fn(tx, e) })
	}
	// A key of the wrong length, which no write produces.
	rawUpdate(t, s, func(tx *bolt.Tx) error {
		return tx.Bucket(objectBucket(KindMutable)).Put([]byte("short"), []byte("x"))
	})

	var c ScrubCursor
	dropped := map[Entry]bool{}
	checked, calls := 0, 0
	for {
		rep, err := s.Scrub(c, 7)
		if err != nil {
			t.Fatal(err)
		}
		calls++
		if rep.Checked > 7 {
			t.Fatalf("scrub checked %d > 7", rep.Checked)
		}
		checked += rep.Checked
		for _, e := range rep.Dropped {
			if dropped[e] {
				t.Fatalf("%v dropped twice", e)
			}
			dropped[e] = true
		}
		if rep.PassDone {
			if rep.Next != (ScrubCursor{}) {
				t.Fatalf("finished pass with cursor %+v", rep.Next)
			}
			break
		}
		c = rep.Next
	}
	if checked != len(all)+1 || calls < (len(all)+1)/7 {
		t.Fatalf("pass checked %d entries in %d calls, want %d", checked, calls, len(all)+1)
	}
	if len(dropped) != len(bad) {
		t.Fatalf("dropped %v, damaged %v", dropped, bad)
	}
	for e := range bad {
		if !dropped[e] {
			t.Fatalf("%v damaged but not dropped", e)
		}
	}
	if st := s.Stats(); st.Corrupt != uint64(len(bad))+1 || st.Objects != int64(len(all)-len(bad)) {
		t.Fatalf("stats %+v, want %d corrupt", st, len(bad)+1)
	}
	checkInvariants(t, s)
	// A second pass finds nothing.
	rep, err := s.Scrub(ScrubCursor{}, 1000)
	if err != nil || len(rep.Dropped) != 0 || !rep.PassDone || rep.Checked != len(all)-len(bad) {
		t.Fatalf("second pass: %+v %v", rep, err)
	}
	if _, err := s.Scrub(ScrubCursor{Kind: 77}, 1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad cursor: %v", err)
	}
}

func TestKeysInRingRange(t *testing.T) {
	s, _ := openTemp(t, DefaultConfig())
	r := mrand.New(mrand.NewPCG(1, 2))
	var keys []Key
	// Keys clustered so ranges cut through groups sharing a ring
	// position, plus the extremes of the ring.
	for i := range 300 {
		hi := r.Uint64()
		if i%5 == 0 {
			hi = uint64(i%4) << 62
		}
		k := ringKey(hi, r.Uint64()%4, r.Uint64())
		keys = append(keys, k)
	}
	keys = append(keys, ringKey(0, 0, 0), ringKey(^uint64(0), ^uint64(0), ^uint64(0)))
	for _, k := range keys {
		s.PutAsync(KindMutable, k, k[:4], Forever, func(err error) {
			if err != nil {
				t.Error(err)
			}
		})
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	d := payload(1, 10)
	mustPut(t, s, KindImmutable, ImmutableKey(d), d, Forever) // another kind: never listed
	pick := func() id.ID {
		if r.IntN(3) == 0 {
			return keys[r.IntN(len(keys))].Ring()
		}
		return id.FromUint64(r.Uint64(), r.Uint64())
	}
	ranges := []Range{
		{From: id.ID{}, To: id.ID{}},
		{From: id.FromUint64(1<<62, 0), To: id.FromUint64(1<<62, 0)},
		{From: id.FromUint64(3<<62, 0), To: id.FromUint64(1<<62, 0)},
		{From: id.FromUint64(1<<62, 0), To: id.FromUint64(3<<62, 0)},
		{From: id.FromUint64(1, 0), To: id.ID{}},
		{From: keys[0].Ring(), To: keys[0].Ring()},
	}
	for range 40 {
		ranges = append(ranges, Range{From: pick(), To: pick()})
	}
	for _, rg := range ranges {
		var want []Key
		for _, k := range keys {
			if rg.Contains(k) {
				want = append(want, k)
			}
		}
		// Clockwise from From: keys at or after From first, then the
		// wrapped part.
		slices.SortFunc(want, func(a, b Key) int {
			da, db := rg.From.CW(a.Ring()), rg.From.CW(b.Ring())
			if c := da.Cmp(db); c != 0 {
				return c
			}
			return bytes.Compare(a[:], b[:])
		})
		for _, limit := range []int{1, 7, 1000} {
			var got []Key
			var after *Key
			for {
				page, more, err := s.Keys(KindMutable, rg, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) > limit || (more && len(page) != limit) {
					t.Fatalf("page of %d with limit %d, more %v", len(page), limit, more)
				}
				got = append(got, page...)
				if !more {
					break
				}
				after = &got[len(got)-1]
			}
			if !slices.Equal(got, want) {
				t.Fatalf("range %v..%v limit %d: got %d keys, want %d", rg.From, rg.To, limit, len(got), len(want))
			}
		}
	}
	outside := Range{From: id.FromUint64(1, 0), To: id.FromUint64(2, 0)}
	k := ringKey(5, 0, 0)
	if _, _, err := s.Keys(KindMutable, outside, &k, 5); !errors.Is(err, ErrInvalid) {
		t.Fatalf("cursor outside range: %v", err)
	}
	if _, _, err := s.Keys(KindMutable, outside, nil, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("zero limit: %v", err)
	}
}

// TestModelRandomOps runs random writes against a map model and checks
// contents, leases, stats and layout invariants, across a reopen.
func TestModelRandomOps(t *testing.T) {
	cfg := DefaultConfig()
	s, path := openTemp(t, cfg)
	type val struct {
		data []byte
		exp  env.Time
	}
	model := map[Entry]val{}
	r := mrand.New(mrand.NewPCG(7, 7))
	now := env.Time(0)
	var mkeys []Key
	for i := range 12 {
		mkeys = append(mkeys, ringKey(uint64(i)<<60, 0, 0))
	}
	for step := range 600 {
		switch op := r.IntN(10); {
		case op < 4:
			d := payload(r.Uint64()%40, r.IntN(3000))
			e := Entry{Kind: KindImmutable, Key: ImmutableKey(d)}
			if op < 2 {
				e = Entry{Kind: KindMutable, Key: mkeys[r.IntN(len(mkeys))]}
			}
			exp := now + env.Time(r.IntN(200))
			mustPut(t, s, e.Kind, e.Key, d, exp)
			old, ok := model[e]
			if ok {
				exp = max(exp, old.exp)
			}
			model[e] = val{d, exp}
		case op < 5:
			for e, v := range model {
				exp := now + env.Time(r.IntN(300))
				if err := s.ExtendLease(e.Kind, e.Key, exp); err != nil {
					t.Fatal(err)
				}
				model[e] = val{v.data, max(v.exp, exp)}
				break
			}
		case op < 6:
			for e := range model {
				if err := s.Delete(e.Kind, e.Key); err != nil {
					t.Fatal(err)
				}
				delete(model, e)
				break
			}
		case op < 8:
			now += env.Time(r.IntN(30))
			if err := s.SetTicks(now); err != nil {
				t.Fatal(err)
			}
		default:
			rep, err := s.Sweep(1 + r.IntN(5))
			if err != nil {
				t.Fatal(err)
			}
			for _, rm := range rep.Removed {
				v, ok := model[rm.Entry]
				if !ok || v.exp > now || v.exp != rm.Expiry || int64(len(v.data)) != rm.Size {
					t.Fatalf("step %d: swept %+v, model %v %+v", step, rm, ok, v.exp)
				}
				delete(model, rm.Entry)
			}
		}
		if step%100 == 99 {
			checkInvariants(t, s)
			if step == 299 {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s = openAt(t, path, cfg)
			}
		}
	}
	var objects, total int64
	for e, v := range model {
		mustGet(t, s, e.Kind, e.Key, v.data)
		if exp, err := s.Lease(e.Kind, e.Key); err != nil || exp != v.exp {
			t.Fatalf("lease %v: %d %v, model %d", e, exp, err, v.exp)
		}
		objects++
		total += int64(len(v.data))
	}
	if st := s.Stats(); st.Objects != objects || st.Bytes != total || st.Ticks != now {
		t.Fatalf("stats %+v, model %d objects %d bytes tick %d", st, objects, total, now)
	}
	checkInvariants(t, s)
}

func TestClosedStoreReturnsErrClosed(t *testing.T) {
	s, path := openTemp(t, DefaultConfig())
	d := payload(1, 10)
	mustPut(t, s, KindImmutable, ImmutableKey(d), d, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	k := ImmutableKey(d)
	_, getErr := s.Get(KindImmutable, k)
	_, hasErr := s.Has(KindImmutable, k)
	_, leaseErr := s.Lease(KindImmutable, k)
	_, metaErr := s.GetMeta("x")
	_, _, keysErr := s.Keys(KindImmutable, Range{}, nil, 1)
	_, scrubErr := s.Scrub(ScrubCursor{}, 1)
	_, sweepErr := s.Sweep(1)
	_, diskErr := s.DiskBytes()
	var asyncErr error
	s.PutAsync(KindImmutable, k, d, 1, func(err error) { asyncErr = err }) // refused at once
	for i, err := range []error{
		getErr, hasErr, leaseErr, metaErr, keysErr, scrubErr, sweepErr, diskErr, asyncErr,
		s.Put(KindImmutable, k, d, 1), s.ExtendLease(KindImmutable, k, 5), s.Delete(KindImmutable, k),
		s.SetTicks(4), s.SetMeta("x", nil), s.DeleteMeta("x"), s.Flush(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("call %d on closed store: %v", i, err)
		}
	}
	s = openAt(t, path, DefaultConfig())
	mustGet(t, s, KindImmutable, k, d)
}

func TestOpenRefusesForeignOrNewerFiles(t *testing.T) {
	dir := t.TempDir()
	foreign := filepath.Join(dir, "foreign.db")
	db, err := bolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(foreign, DefaultConfig()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("foreign file: %v", err)
	}

	s, path := openTemp(t, DefaultConfig())
	rawUpdate(t, s, func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketStore)).Put([]byte(recFormat), encodeCounter(formatVersion+1))
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, DefaultConfig()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("newer format: %v", err)
	}

	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte{0xAB}, 1<<14), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(garbage, DefaultConfig()); err == nil {
		t.Fatal("opened a garbage file")
	}
}

func TestSecondOpenTimesOut(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LockTimeout = 1 // the lock is held; fail at once rather than wait
	_, path := openTemp(t, cfg)
	if s, err := Open(path, cfg); err == nil {
		_ = s.Close()
		t.Fatal("a second Open of a held file succeeded")
	}
}
