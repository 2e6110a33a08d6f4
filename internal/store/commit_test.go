package store

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/env"
)

// logEvent is one line of an ordering log: a store Event, or (user) a
// completion callback as the caller saw it.
type logEvent struct {
	Event
	user  bool
	entry Entry // user: the write that completed
}

// recorder is an Observer that keeps every event, plus the completions
// the test's callbacks report, in one totally ordered log.
type recorder struct {
	mu  sync.Mutex
	log []logEvent
	// hook, if set, runs (outside the lock) after recording each event.
	hook func(Event)
}

func (r *recorder) Observe(ev Event) {
	ev.Writes = slices.Clone(ev.Writes)
	r.mu.Lock()
	r.log = append(r.log, logEvent{Event: ev})
	r.mu.Unlock()
	if r.hook != nil {
		r.hook(ev)
	}
}

// completed records, from inside a done callback, that the write of e
// completed with err.
func (r *recorder) completed(e Entry, err error) {
	r.mu.Lock()
	r.log = append(r.log, logEvent{Event: Event{Type: EventCompleted, Err: err}, user: true, entry: e})
	r.mu.Unlock()
}

func (r *recorder) events() []logEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.log)
}

// checkOrdering verifies the ack ordering guarantee on a log:
//   - every submitted write completes exactly once;
//   - a write that completes with nil is carried by a transaction whose
//     sync started after the write was submitted and returned nil before
//     the completion;
//   - a caller sees a nil completion only after that.
//
// For user completions, the k-th one for an entry is the k-th write
// submitted for it (completions fire in submission order).
func checkOrdering(log []logEvent) error {
	submitted := map[uint64]int{} // seq -> log index
	entrySeqs := map[Entry][]uint64{}
	type batch struct {
		start, done int
		err         error
		writes      []uint64
	}
	batches := map[uint64]*batch{}
	completed := map[uint64]int{} // seq -> index of the store's Completed
	completedErr := map[uint64]error{}
	userSeen := map[Entry]int{}
	for i, ev := range log {
		switch {
		case ev.user:
			seqs := entrySeqs[ev.entry]
			k := userSeen[ev.entry]
			userSeen[ev.entry]++
			if k >= len(seqs) {
				return fmt.Errorf("event %d: completion of %v with no submitted write", i, ev.entry)
			}
			seq := seqs[k]
			ci, ok := completed[seq]
			if !ok || ci > i {
				return fmt.Errorf("event %d: caller saw write %d complete before the store completed it", i, seq)
			}
			if (ev.Err == nil) != (completedErr[seq] == nil) {
				return fmt.Errorf("event %d: caller saw %v, store completed write %d with %v", i, ev.Err, seq, completedErr[seq])
			}
		case ev.Type == EventSubmitted:
			if _, dup := submitted[ev.Write]; dup {
				return fmt.Errorf("event %d: write %d submitted twice", i, ev.Write)
			}
			submitted[ev.Write] = i
			if ev.Entry != (Entry{}) {
				entrySeqs[ev.Entry] = append(entrySeqs[ev.Entry], ev.Write)
			}
		case ev.Type == EventSyncStarted:
			for _, w := range ev.Writes {
				if _, ok := submitted[w]; !ok {
					return fmt.Errorf("event %d: batch %d carries write %d before its submission", i, ev.Batch, w)
				}
			}
			batches[ev.Batch] = &batch{start: i, done: -1, writes: ev.Writes}
		case ev.Type == EventSyncDone:
			b, ok := batches[ev.Batch]
			if !ok {
				return fmt.Errorf("event %d: sync of batch %d returned without starting", i, ev.Batch)
			}
			b.done, b.err = i, ev.Err
		case ev.Type == EventCompleted:
			if _, dup := completed[ev.Write]; dup {
				return fmt.Errorf("event %d: write %d completed twice", i, ev.Write)
			}
			completed[ev.Write] = i
			completedErr[ev.Write] = ev.Err
			if ev.Err != nil {
				continue
			}
			covered := false
			for _, b := range batches {
				if b.done >= 0 && b.done < i && b.err == nil && slices.Contains(b.writes, ev.Write) {
					covered = true
					break
				}
			}
			if !covered {
				return fmt.Errorf("event %d: write %d completed with nil before any sync covering it returned", i, ev.Write)
			}
		}
	}
	for seq := range submitted {
		if _, ok := completed[seq]; !ok {
			return fmt.Errorf("write %d never completed", seq)
		}
	}
	return nil
}

func TestOrderingCheckerCatchesEarlyAcks(t *testing.T) {
	e := Entry{Kind: KindImmutable, Key: Key{1}}
	sub := logEvent{Event: Event{Type: EventSubmitted, Write: 1, Entry: e}}
	start := logEvent{Event: Event{Type: EventSyncStarted, Batch: 1, Writes: []uint64{1}}}
	done := logEvent{Event: Event{Type: EventSyncDone, Batch: 1}}
	failed := logEvent{Event: Event{Type: EventSyncDone, Batch: 1, Err: errors.New("EIO")}}
	comp := logEvent{Event: Event{Type: EventCompleted, Write: 1}}
	user := logEvent{Event: Event{Type: EventCompleted}, user: true, entry: e}
	otherStart := logEvent{Event: Event{Type: EventSyncStarted, Batch: 1, Writes: []uint64{2}}}
	cases := []struct {
		name string
		log  []logEvent
		ok   bool
	}{
		{"correct", []logEvent{sub, start, done, comp, user}, true},
		{"completion before sync returns", []logEvent{sub, start, comp, done, user}, false},
		{"completion before sync starts", []logEvent{sub, comp, start, done, user}, false},
		{"caller sees it before the store completes", []logEvent{sub, start, done, user, comp}, false},
		{"sync failed", []logEvent{sub, start, failed, comp, user}, false},
		{"sync of another batch", []logEvent{sub, otherStart, done, comp, user}, false},
		{"batch carries an unsubmitted write", []logEvent{start, sub, done, comp, user}, false},
		{"never completed", []logEvent{sub, start, done}, false},
	}
	for _, c := range cases {
		if err := checkOrdering(c.log); (err == nil) != c.ok {
			t.Errorf("%s: checker said %v", c.name, err)
		}
	}
}

// TestAckFollowsSync drives many concurrent writers through group commit
// and checks, on the recorded event log, that no completion precedes the
// sync that covers it. (A killed process keeps its page cache, so the
// crash test alone cannot catch a missing fsync; this proves the order.)
func TestAckFollowsSync(t *testing.T) {
	configs := map[string]func(*Config){
		"default":       func(*Config) {},
		"window":        func(c *Config) { c.GroupCommitWindow = 200 * time.Microsecond; c.MaxBatch = 4 },
		"no group":      func(c *Config) { c.MaxBatch = 1 },
		"small batches": func(c *Config) { c.MaxBatchBytes = 3000 },
	}
	for name, tweak := range configs {
		t.Run(name, func(t *testing.T) {
			rec := &recorder{}
			cfg := DefaultConfig()
			cfg.Observer = rec
			tweak(&cfg)
			s, _ := openTemp(t, cfg)
			const writers, each = 8, 40
			var wg sync.WaitGroup
			errs := make(chan error, writers*each*2)
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var mine sync.WaitGroup
					var entries []Entry
					for i := range each {
						n := uint64(w*1000 + i)
						d := payload(n, 100+i*37)
						e := Entry{Kind: KindImmutable, Key: ImmutableKey(d)}
						if i%3 == 0 {
							e = Entry{Kind: KindMutable, Key: ringKey(n, n, n)}
						}
						entries = append(entries, e)
						mine.Add(1)
						s.PutAsync(e.Kind, e.Key, d, 10, func(err error) {
							rec.completed(e, err)
							if err != nil {
								errs <- err
							}
							mine.Done()
						})
						if i%5 == 4 {
							_ = s.Put(KindMutable, ringKey(n, 0, 99), d, 10) // a synchronous writer too
						}
					}
					mine.Wait()
					for i, e := range entries {
						if i%2 == 0 {
							continue
						}
						exps := []env.Time{20}
						if i%4 == 1 {
							exps = append(exps, 5) // changes nothing, still synced
						}
						for _, exp := range exps {
							mine.Add(1)
							s.ExtendLeaseAsync(e.Kind, e.Key, exp, func(err error) {
								rec.completed(e, err)
								if err != nil {
									errs <- err
								}
								mine.Done()
							})
						}
					}
					mine.Wait()
					if err := s.Flush(); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			log := rec.events()
			if err := checkOrdering(log); err != nil {
				t.Fatal(err)
			}
			syncs := 0
			for _, ev := range log {
				if ev.Type == EventSyncStarted {
					syncs++
					if len(ev.Writes) > cfg.MaxBatch {
						t.Fatalf("batch of %d writes, MaxBatch %d", len(ev.Writes), cfg.MaxBatch)
					}
				}
			}
			st := s.Stats()
			t.Logf("%d writes in %d synced transactions", st.Writes, syncs)
			checkInvariants(t, s)
		})
	}
}

// gate blocks the committer inside the sync of transaction 1 until
// released, so a test can queue writes behind it deterministically.
type gate struct {
	recorder
	started, release chan struct{}
}

func newGate() *gate {
	g := &gate{started: make(chan struct{}), release: make(chan struct{})}
	g.hook = func(ev Event) {
		if ev.Type == EventSyncStarted && ev.Batch == 1 {
			close(g.started)
			<-g.release
		}
	}
	return g
}

// batchSizes lists the number of writes in each synced transaction.
func (g *gate) batchSizes() []int {
	var sizes []int
	for _, ev := range g.events() {
		if ev.Type == EventSyncStarted {
			sizes = append(sizes, len(ev.Writes))
		}
	}
	return sizes
}

// queueBehindGate opens a store with cfg, stalls its committer in the
// first sync, queues n writes of size bytes each, releases it and waits
// for every completion. It returns the gate and the writes' results.
func queueBehindGate(t *testing.T, cfg Config, n, size int, extra func(s *Store)) (*gate, []error) {
	t.Helper()
	g := newGate()
	cfg.Observer = g
	s, _ := openTemp(t, cfg)
	first := payload(0, 10)
	s.PutAsync(KindImmutable, ImmutableKey(first), first, 1, nil)
	<-g.started
	results := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		d := payload(uint64(i+1), size)
		wg.Add(1)
		s.PutAsync(KindImmutable, ImmutableKey(d), d, 1, func(err error) {
			results[i] = err
			wg.Done()
		})
	}
	if extra != nil {
		extra(s)
	}
	close(g.release)
	wg.Wait()
	if err := checkOrdering(g.events()); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, s)
	return g, results
}

func TestGroupCommitBatchesQueuedWrites(t *testing.T) {
	cases := []struct {
		name  string
		tweak func(*Config)
		size  int
		want  []int
	}{
		{"all in one", func(*Config) {}, 100, []int{1, 30}},
		{"max batch", func(c *Config) { c.MaxBatch = 8 }, 100, []int{1, 8, 8, 8, 6}},
		{"no group commit", func(c *Config) { c.MaxBatch = 1 }, 100, slices.Repeat([]int{1}, 31)},
		{"max batch bytes", func(c *Config) { c.MaxBatchBytes = 3000 }, 1000, append([]int{1}, slices.Repeat([]int{2}, 15)...)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			c.tweak(&cfg)
			g, results := queueBehindGate(t, cfg, 30, c.size, nil)
			for i, err := range results {
				if err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
			}
			if got := g.batchSizes(); !slices.Equal(got, c.want) {
				t.Fatalf("batch sizes %v, want %v", got, c.want)
			}
		})
	}
}

// TestGroupCommitWindowFillsBatch: once writers are concurrent (the last
// transaction carried several writes), the committer waits through the
// window for more, and a window that never ends on its own closes when
// the batch is full. After a single-write transaction it does not wait
// (or this test would hang in its first transactions).
func TestGroupCommitWindowFillsBatch(t *testing.T) {
	cfg := DefaultConfig()
	cfg.GroupCommitWindow = time.Hour
	cfg.MaxBatch = 10
	g := newGate()
	cfg.Observer = g
	s, _ := openTemp(t, cfg)
	var wg sync.WaitGroup
	async := func(from, n int) {
		for i := from; i < from+n; i++ {
			d := payload(uint64(i), 100)
			wg.Add(1)
			s.PutAsync(KindImmutable, ImmutableKey(d), d, 1, func(err error) {
				if err != nil {
					t.Error(err)
				}
				wg.Done()
			})
		}
	}
	async(0, 1) // transaction 1, stalled in its sync
	<-g.started
	async(1, 2) // queued behind it: transaction 2 carries both
	close(g.release)
	wg.Wait()
	async(100, 10) // submitted one by one; the committer waits for all
	wg.Wait()
	if got := g.batchSizes(); !slices.Equal(got, []int{1, 2, 10}) {
		t.Fatalf("batch sizes %v, want [1 2 10]", got)
	}
	if err := checkOrdering(g.events()); err != nil {
		t.Fatal(err)
	}
}

func TestCloseDuringWindowCommitsQueued(t *testing.T) {
	g := newGate()
	cfg := DefaultConfig()
	cfg.GroupCommitWindow = time.Hour
	cfg.Observer = g
	s, path := openTemp(t, cfg)
	var wg sync.WaitGroup
	var keys []Key
	async := func(from, n int) {
		for i := from; i < from+n; i++ {
			d := payload(uint64(i), 50)
			keys = append(keys, ImmutableKey(d))
			wg.Add(1)
			s.PutAsync(KindImmutable, ImmutableKey(d), d, 1, func(err error) {
				if err != nil {
					t.Error(err)
				}
				wg.Done()
			})
		}
	}
	async(0, 1)
	<-g.started
	async(1, 2) // a two-write transaction: from now on the committer waits
	close(g.release)
	wg.Wait()
	async(3, 5)                       // the committer sits in its hour-long window
	if err := s.Close(); err != nil { // ends it
		t.Fatal(err)
	}
	wg.Wait()
	if got := g.batchSizes(); !slices.Equal(got, []int{1, 2, 5}) {
		t.Fatalf("batch sizes %v, want [1 2 5]", got)
	}
	if err := checkOrdering(g.events()); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, DefaultConfig())
	for i, k := range keys {
		mustGet(t, s, KindImmutable, k, payload(uint64(i), 50))
	}
}

func TestFullQueueRefusesWithErrBusy(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxObjectSize = 1000
	cfg.MaxQueueBytes = 1000 + objectHeader
	var busy error
	_, results := queueBehindGate(t, cfg, 1, 1000, func(s *Store) {
		d := payload(99, 10)
		s.PutAsync(KindImmutable, ImmutableKey(d), d, 1, func(err error) { busy = err }) // refused at once
	})
	if results[0] != nil {
		t.Fatalf("queued write: %v", results[0])
	}
	if !errors.Is(busy, ErrBusy) {
		t.Fatalf("write beyond the queue limit: %v", busy)
	}
}

// TestFailedBatchRetriesWritesAlone: a write that cannot fit fails alone;
// the writes that shared its transaction still land.
func TestFailedBatchRetriesWritesAlone(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxObjectSize = 1 << 20
	cfg.MaxDiskBytes = 256 << 10
	g := newGate()
	cfg.Observer = g
	s, _ := openTemp(t, cfg)
	first := payload(0, 10)
	s.PutAsync(KindImmutable, ImmutableKey(first), first, 1, nil)
	<-g.started
	sizes := []int{100, 600 << 10, 200}
	results := make([]error, len(sizes))
	var wg sync.WaitGroup
	var keys []Key
	for i, n := range sizes {
		d := payload(uint64(i+1), n)
		keys = append(keys, ImmutableKey(d))
		wg.Add(1)
		s.PutAsync(KindImmutable, ImmutableKey(d), d, 1, func(err error) {
			results[i] = err
			wg.Done()
		})
	}
	close(g.release)
	wg.Wait()
	if results[0] != nil || results[2] != nil || !errors.Is(results[1], ErrFull) {
		t.Fatalf("results %v, want nil, ErrFull, nil", results)
	}
	if got, want := g.batchSizes(), []int{1, 3, 1, 1, 1}; !slices.Equal(got, want) {
		t.Fatalf("batches %v, want %v", got, want)
	}
	if err := checkOrdering(g.events()); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, KindImmutable, keys[0], payload(1, 100))
	mustGet(t, s, KindImmutable, keys[2], payload(3, 200))
	if ok, _ := s.Has(KindImmutable, keys[1]); ok {
		t.Fatal("the write that failed is stored")
	}
	checkInvariants(t, s)
}

// TestDiskQuotaFullThenRecovers fills the store to its quota, then frees
// space both ways (more room, expired objects) and writes again.
func TestDiskQuotaFullThenRecovers(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxDiskBytes = 1 << 20
	s, _ := openTemp(t, cfg)
	var stored []uint64
	var fullErr error
	for i := uint64(0); i < 500; i++ {
		d := payload(i, 16<<10)
		if err := s.Put(KindImmutable, ImmutableKey(d), d, 10); err != nil {
			fullErr = err
			break
		}
		stored = append(stored, i)
	}
	if !errors.Is(fullErr, ErrFull) || len(stored) == 0 {
		t.Fatalf("after %d puts: %v, want ErrFull", len(stored), fullErr)
	}
	for _, i := range stored {
		d := payload(i, 16<<10)
		mustGet(t, s, KindImmutable, ImmutableKey(d), d)
	}
	checkInvariants(t, s)
	// A full store can still remove: deleting allocates pages too.
	last := payload(stored[len(stored)-1], 16<<10)
	if err := s.Delete(KindImmutable, ImmutableKey(last)); err != nil {
		t.Fatalf("delete in a full store: %v", err)
	}
	stored = stored[:len(stored)-1]

	// Space returns: the quota is raised (as when the disk gains room).
	s.db.MaxSize = 4 << 20
	d := payload(1000, 16<<10)
	mustPut(t, s, KindImmutable, ImmutableKey(d), d, 10)
	s.db.MaxSize = cfg.MaxDiskBytes

	// Or leases run out and the sweep frees pages for new objects.
	if err := s.SetTicks(10); err != nil {
		t.Fatal(err)
	}
	for {
		rep, err := s.Sweep(16)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.More {
			break
		}
	}
	if st := s.Stats(); st.Objects != 0 || st.Bytes != 0 {
		t.Fatalf("after sweep: %+v", st)
	}
	for i := uint64(2000); i < 2020; i++ {
		d := payload(i, 16<<10)
		mustPut(t, s, KindImmutable, ImmutableKey(d), d, 100)
	}
	checkInvariants(t, s)
}

func TestWritesApplyInSubmissionOrder(t *testing.T) {
	s, _ := openTemp(t, DefaultConfig())
	k := ringKey(1, 2, 3)
	var wg sync.WaitGroup
	for v := range 200 {
		wg.Add(1)
		s.PutAsync(KindMutable, k, payload(uint64(v), 64), env.Time(v), func(err error) {
			if err != nil {
				t.Error(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	mustGet(t, s, KindMutable, k, payload(199, 64))
	if exp, _ := s.Lease(KindMutable, k); exp != 199 {
		t.Fatalf("lease %d", exp)
	}
}

// TestCompletionsInSubmissionOrder: completions fire in the order the
// writes were submitted.
func TestCompletionsInSubmissionOrder(t *testing.T) {
	s, _ := openTemp(t, DefaultConfig())
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range 100 {
		d := payload(uint64(i), 100)
		wg.Add(1)
		s.PutAsync(KindImmutable, ImmutableKey(d), d, 1, func(error) {
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	if !slices.IsSorted(order) {
		t.Fatalf("completion order %v", order)
	}
}

// TestNeverCommitsWithoutSync: bbolt's NoSync is off, and if anything
// turned it on, writes would fail rather than be acknowledged unsynced.
func TestNeverCommitsWithoutSync(t *testing.T) {
	s, _ := openTemp(t, DefaultConfig())
	if s.db.NoSync || s.db.NoGrowSync || s.db.NoFreelistSync {
		t.Fatalf("bbolt opened with NoSync %v, NoGrowSync %v, NoFreelistSync %v", s.db.NoSync, s.db.NoGrowSync, s.db.NoFreelistSync)
	}
	s.db.NoSync = true // as if some code reached into bbolt
	d := payload(1, 10)
	if err := s.Put(KindImmutable, ImmutableKey(d), d, 1); err == nil {
		t.Fatal("a write was acknowledged with NoSync set")
	}
	s.db.NoSync = false
	mustPut(t, s, KindImmutable, ImmutableKey(d), d, 1)
}

// TestInjectedDiskFaults: with Faults set, every write fails with the
// sentinel its cause maps to (ENOSPC: ErrFull; EIO: ErrIO), is counted,
// and is not visible; what was acknowledged before stays readable, and
// writes succeed again once the fault ends.
func TestInjectedDiskFaults(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Faults = &Faults{}
	s, path := openTemp(t, cfg)
	before := payload(1, 100)
	mustPut(t, s, KindImmutable, ImmutableKey(before), before, 10)
	for i, c := range []struct {
		cause error
		want  error
	}{{syscall.ENOSPC, ErrFull}, {syscall.EIO, ErrIO}} {
		cfg.Faults.Fail(c.cause)
		d := payload(uint64(10+i), 100)
		err := s.Put(KindImmutable, ImmutableKey(d), d, 10)
		if !errors.Is(err, c.want) || !errors.Is(err, c.cause) {
			t.Fatalf("put under %v: %v, want %v", c.cause, err, c.want)
		}
		if err := s.SetMeta("m", []byte("x")); !errors.Is(err, c.want) {
			t.Fatalf("set meta under %v: %v", c.cause, err)
		}
		if ok, _ := s.Has(KindImmutable, ImmutableKey(d)); ok {
			t.Fatalf("write failed under %v is visible", c.cause)
		}
		mustGet(t, s, KindImmutable, ImmutableKey(before), before)
	}
	if got := s.Stats().WriteErrors; got != 4 {
		t.Fatalf("WriteErrors = %d, want 4", got)
	}
	cfg.Faults.Fail(nil)
	after := payload(2, 100)
	mustPut(t, s, KindImmutable, ImmutableKey(after), after, 10)
	checkInvariants(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, DefaultConfig())
	mustGet(t, s, KindImmutable, ImmutableKey(before), before)
	mustGet(t, s, KindImmutable, ImmutableKey(after), after)
}
