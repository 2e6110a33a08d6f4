package store

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/epost-mail/epost/internal/store/object"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/epost-mail/epost/internal/env"
)

// Errors callers match with errors.Is. Every error the store returns
// wraps one of these or an underlying I/O error, with context.
var (
	// ErrNotFound: no such object, lease or metadata entry. Reads of a
	// corrupted object return an error that matches both ErrNotFound and
	// ErrCorrupt.
	ErrNotFound = object.ErrNotFound
	// ErrCorrupt: stored bytes failed verification (content hash,
	// checksum, or record format).
	ErrCorrupt = object.ErrCorrupt
	// ErrTooLarge: an object or metadata value exceeds Config.MaxObjectSize.
	ErrTooLarge = object.ErrTooLarge
	// ErrClosed: the store has been closed.
	ErrClosed = object.ErrClosed
	// ErrFull: the disk, or the store's Config.MaxDiskBytes quota, has no
	// room for the write. The store stays usable; the write may succeed
	// once space is freed (Sweep, Delete) or the disk has room again.
	ErrFull = object.ErrFull
	// ErrIO: the disk failed a write or its sync (an I/O error, a
	// read-only file system) for a reason other than room. Like ErrFull,
	// the store stays usable and the write may succeed later.
	ErrIO = object.ErrIO
	// ErrBusy: more than Config.MaxQueueBytes of writes are waiting for
	// the disk; the write was refused without being queued.
	ErrBusy = object.ErrBusy
	// ErrInvalid: a malformed request (unknown kind, immutable data that
	// does not hash to its key, ticks going backwards, bad arguments).
	ErrInvalid = object.ErrInvalid
)

// Forever is a lease expiry that no tick count reaches: the object stays
// until it is deleted.
const Forever env.Time = math.MaxInt64

// MaxMetaName bounds the length of a metadata name.
const MaxMetaName = 255

// Bucket names; see the package doc for the layout.
const (
	bucketStore  = "store"
	bucketMeta   = "meta"
	bucketLease  = "lease"
	bucketExpiry = "expiry"

	recFormat = "format"
	recTicks  = "ticks"
	recStats  = "stats"
)

// objectBucket names the bucket holding objects of kind k.
func objectBucket(k Kind) []byte { return []byte("obj/" + k.String()) }

// Config tunes a Store. Start from DefaultConfig.
type Config struct {
	// MaxObjectSize bounds an object's (and a metadata value's) length in
	// bytes; larger writes fail with ErrTooLarge.
	MaxObjectSize int
	// GroupCommitWindow is how long the committer, having taken the
	// writes already queued, waits for more before committing, unless
	// MaxBatch or MaxBatchBytes is reached first. It waits only when the
	// previous transaction carried more than one write, so a lone writer
	// never waits. Zero means never wait: writes that arrive while a
	// commit is in progress still share the next one.
	GroupCommitWindow time.Duration
	// MaxBatch bounds the writes sharing one transaction and fsync. One
	// disables group commit: every write gets its own fsync.
	MaxBatch int
	// MaxBatchBytes bounds the payload bytes in one transaction (a single
	// larger write still goes alone).
	MaxBatchBytes int
	// MaxQueueBytes bounds the payload bytes waiting for the committer;
	// writes beyond it fail at once with ErrBusy.
	MaxQueueBytes int
	// MaxDiskBytes caps the database file's size; 0 means no cap. Writes
	// that would grow the file past it fail with ErrFull.
	MaxDiskBytes int
	// LockTimeout is how long Open waits for the file lock held by another
	// process before failing.
	LockTimeout time.Duration
	// Observer, if not nil, is told of every write's submission, sync and
	// completion. It exists for tests that prove the ack ordering, and for
	// metrics. It must be fast and safe for concurrent use, and must not
	// call back into the Store.
	Observer Observer
	// Faults, if not nil, makes write transactions fail on demand: for
	// tests and fault drills only.
	Faults *Faults
}

// DefaultConfig is the configuration a node runs with.
func DefaultConfig() Config {
	return Config{
		// Mail bodies are chunked by POST well below this; it keeps one
		// value well inside wire.MaxMessage and one bbolt transaction small.
		MaxObjectSize: 16 << 20,
		// A tenth of an fsync on a typical disk. Without it, 8 writers
		// settle into two alternating batches of 4; with it, one batch of
		// about 7, fewer fsyncs and (BenchmarkDurablePut) slightly more
		// durable puts per second. Longer windows gain nothing more. A lone
		// writer never waits.
		GroupCommitWindow: 100 * time.Microsecond,
		// Enough to absorb a burst from every connection of a busy node;
		// past this the fsync is no longer the bottleneck.
		MaxBatch:      256,
		MaxBatchBytes: 32 << 20,
		// A few seconds of disk bandwidth; beyond it, refusing (so PAST
		// declines to store and the inserter picks another replica) beats
		// growing memory without bound.
		MaxQueueBytes: 256 << 20,
		MaxDiskBytes:  0,
		// Long enough to ride out a previous process exiting; short
		// enough that a second node on the same folder fails visibly.
		LockTimeout: time.Second,
	}
}

func (c Config) check() error {
	switch {
	case c.MaxObjectSize <= 0 || c.MaxObjectSize > math.MaxInt32-objectHeader:
		return fmt.Errorf("%w: MaxObjectSize %d", ErrInvalid, c.MaxObjectSize)
	case c.GroupCommitWindow < 0:
		return fmt.Errorf("%w: GroupCommitWindow %v", ErrInvalid, c.GroupCommitWindow)
	case c.MaxBatch < 1:
		return fmt.Errorf("%w: MaxBatch %d", ErrInvalid, c.MaxBatch)
	case c.MaxBatchBytes < 1:
		return fmt.Errorf("%w: MaxBatchBytes %d", ErrInvalid, c.MaxBatchBytes)
	case c.MaxQueueBytes < c.MaxObjectSize+objectHeader:
		return fmt.Errorf("%w: MaxQueueBytes %d below one object", ErrInvalid, c.MaxQueueBytes)
	case c.MaxDiskBytes < 0:
		return fmt.Errorf("%w: MaxDiskBytes %d", ErrInvalid, c.MaxDiskBytes)
	case c.LockTimeout < 0:
		return fmt.Errorf("%w: LockTimeout %v", ErrInvalid, c.LockTimeout)
	}
	return nil
}

// Store is a node's local object store. All methods are safe for
// concurrent use. Reads run in parallel; writes go through one committer
// goroutine that groups them into synced transactions.
type Store struct {
	db   *bolt.DB
	cfg  Config
	path string

	closed atomic.Bool // set once the database is closed

	wake    chan struct{} // nudges the committer; buffered, one slot
	stopped chan struct{} // closed when the committer has exited

	mu         sync.Mutex
	queue      []*request
	queueBytes int
	seq        uint64 // last write sequence number handed out
	closing    bool
	counts     counts   // committed size accounting
	ticks      env.Time // committed uptime ticks
	batches    uint64   // transactions committed since Open
	writes     uint64   // requests completed by those transactions
	failed     uint64   // requests failed by the disk since Open

	// Owned by the committer goroutine.
	batchSeq  uint64 // transactions synced, for Observer events
	lastBatch int    // writes in the previous batch
}

// Open opens (creating if needed) the store in the bbolt file at path and
// starts its committer goroutine. Close stops it.
func Open(path string, cfg Config) (*Store, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      cfg.LockTimeout,
		FreelistType: bolt.FreelistMapType,
		MaxSize:      cfg.MaxDiskBytes,
		// NoSync, NoGrowSync and NoFreelistSync stay false: every commit
		// fsyncs its pages, then its meta page. Config has no way to
		// change that, and commit checks it again.
	})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &Store{
		db:      db,
		cfg:     cfg,
		path:    path,
		wake:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	go s.run()
	return s, nil
}

// init creates the buckets of a new file, or checks and loads an existing
// one.
func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		sb := tx.Bucket([]byte(bucketStore))
		if sb == nil {
			notOurs := fmt.Errorf("%w: file holds buckets but no store record", ErrInvalid)
			if err := tx.ForEach(func([]byte, *bolt.Bucket) error { return notOurs }); err != nil {
				return err
			}
			var err error
			if sb, err = tx.CreateBucket([]byte(bucketStore)); err != nil {
				return err
			}
			if err := sb.Put([]byte(recFormat), encodeCounter(formatVersion)); err != nil {
				return err
			}
		}
		v, err := decodeCounter(sb.Get([]byte(recFormat)))
		if err != nil {
			return fmt.Errorf("format record: %w", err)
		}
		if v != formatVersion {
			return fmt.Errorf("%w: file format %d, this build reads %d", ErrInvalid, v, formatVersion)
		}
		names := [][]byte{[]byte(bucketMeta), []byte(bucketLease), []byte(bucketExpiry)}
		for _, k := range allKinds() {
			names = append(names, objectBucket(k))
		}
		for _, n := range names {
			if _, err := tx.CreateBucketIfNotExists(n); err != nil {
				return err
			}
		}
		if b := sb.Get([]byte(recTicks)); b != nil {
			if s.ticks, err = decodeTicks(b); err != nil {
				return err
			}
		}
		if b := sb.Get([]byte(recStats)); b != nil {
			if s.counts, err = decodeStats(b); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close commits every write already submitted, fires its completion,
// stops the committer and closes the file. Writes submitted afterwards
// fail with ErrClosed. Close must not be called from a completion
// callback. A second Close returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	already := s.closing
	s.closing = true
	s.mu.Unlock()
	s.nudge()
	<-s.stopped
	if already {
		return nil
	}
	s.closed.Store(true)
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", s.path, err)
	}
	return nil
}

// view runs a read transaction, mapping a closed database to ErrClosed.
// A page that cannot be read (an I/O error on the mapped file faults) or
// that bbolt finds malformed (it panics) becomes an error matching
// ErrCorrupt instead of bringing the node down.
func (s *Store) view(fn func(tx *bolt.Tx) error) (err error) {
	if s.closed.Load() {
		return ErrClosed
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = unreadable(p)
		}
	}()
	err = s.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// unreadable is the error for a recovered fault or bbolt panic.
func unreadable(p any) error {
	return fmt.Errorf("%w: database file unreadable: %v", ErrCorrupt, p)
}

// Get returns a copy of the object's bytes after verifying them (content
// hash for immutable objects, stored checksum for mutable ones). A
// corrupted entry is scheduled for removal, counted, and reported with an
// error matching both ErrNotFound and ErrCorrupt. Get does not consult the
// lease: an expired object is served until Sweep removes it.
func (s *Store) Get(kind Kind, key Key) ([]byte, error) {
	e := Entry{Kind: kind, Key: key}
	if !kind.Valid() {
		return nil, fmt.Errorf("store: get %v: %w: kind", e, ErrInvalid)
	}
	var data []byte
	var bad error
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(objectBucket(kind)).Get(key[:])
		if v == nil {
			return ErrNotFound
		}
		rec, err := decodeObject(v)
		if err == nil {
			err = rec.verify(kind, key)
		}
		if err != nil {
			bad = err
			return nil
		}
		data = bytes.Clone(rec.Data)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: get %v: %w", e, err)
	}
	if bad != nil {
		s.dropCorrupt(e)
		return nil, fmt.Errorf("store: get %v: %w (entry dropped): %w", e, bad, ErrNotFound)
	}
	return data, nil
}

// Has reports whether an object is stored, without reading or verifying
// its bytes (replica maintenance uses it on whole key summaries).
func (s *Store) Has(kind Kind, key Key) (bool, error) {
	if !kind.Valid() {
		return false, fmt.Errorf("store: has %v: %w: kind", Entry{Kind: kind, Key: key}, ErrInvalid)
	}
	var ok bool
	err := s.view(func(tx *bolt.Tx) error {
		ok = tx.Bucket(objectBucket(kind)).Get(key[:]) != nil
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("store: has %v: %w", Entry{Kind: kind, Key: key}, err)
	}
	return ok, nil
}

// Lease returns the tick at which the object's lease runs out (compare
// with Ticks). A lease record that fails to decode is treated like a
// corrupted object: the entry is dropped and the error matches ErrNotFound
// and ErrCorrupt.
func (s *Store) Lease(kind Kind, key Key) (env.Time, error) {
	e := Entry{Kind: kind, Key: key}
	if !kind.Valid() {
		return 0, fmt.Errorf("store: lease %v: %w: kind", e, ErrInvalid)
	}
	var exp env.Time
	var bad error
	err := s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(objectBucket(kind)).Get(key[:]) == nil {
			return ErrNotFound
		}
		l, err := decodeLease(tx.Bucket([]byte(bucketLease)).Get(leaseKey(kind, key)))
		if err != nil {
			bad = err
			return nil
		}
		exp = l.expiry
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: lease %v: %w", e, err)
	}
	if bad != nil {
		s.dropCorrupt(e)
		return 0, fmt.Errorf("store: lease %v: %w (entry dropped): %w", e, bad, ErrNotFound)
	}
	return exp, nil
}

// GetMeta returns a copy of the metadata value stored under name.
func (s *Store) GetMeta(name string) ([]byte, error) {
	if err := checkMetaName(name); err != nil {
		return nil, fmt.Errorf("store: get meta %q: %w", name, err)
	}
	var data []byte
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(bucketMeta)).Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		rec, err := decodeObject(v)
		if err == nil {
			err = rec.verify(kindMeta, Key{})
		}
		if err != nil {
			return err
		}
		data = bytes.Clone(rec.Data)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: get meta %q: %w", name, err)
	}
	return data, nil
}

func checkMetaName(name string) error {
	if len(name) == 0 || len(name) > MaxMetaName {
		return fmt.Errorf("%w: metadata name of %d bytes", ErrInvalid, len(name))
	}
	return nil
}

// Ticks returns the store's persisted uptime counter as last committed by
// SetTicks. Leases are expiries on this counter, never on wall time.
func (s *Store) Ticks() env.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ticks
}

// KindStats is the size accounting for one kind.
type KindStats struct {
	Kind    Kind  // the kind counted
	Objects int64 // entries stored
	Bytes   int64 // object bytes stored, excluding record headers
}

// Stats is the store's size accounting and counters, as of the last
// commit. Objects, Bytes, PerKind, Corrupt and Expired are persisted;
// Batches and Writes count since Open.
type Stats struct {
	Objects int64       // objects stored, all kinds
	Bytes   int64       // object bytes stored, all kinds, excluding headers
	PerKind []KindStats // in Kind order
	Corrupt uint64      // entries found corrupt and dropped, ever
	Expired uint64      // entries removed by Sweep, ever
	Ticks   env.Time    // the uptime counter
	Batches uint64      // synced transactions since Open
	Writes  uint64      // writes completed since Open
	// WriteErrors counts writes the disk failed since Open (their
	// completion reported an error matching ErrFull, ErrIO or ErrCorrupt).
	WriteErrors uint64
}

// Stats returns the current accounting. It does not touch the disk.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Corrupt: s.counts.corrupt, Expired: s.counts.expired, Ticks: s.ticks, Batches: s.batches, Writes: s.writes, WriteErrors: s.failed}
	for _, k := range allKinds() {
		ks := KindStats{Kind: k, Objects: s.counts.objects[k], Bytes: s.counts.bytes[k]}
		st.PerKind = append(st.PerKind, ks)
		st.Objects += ks.Objects
		st.Bytes += ks.Bytes
	}
	return st
}

// DiskBytes returns the size of the database file.
func (s *Store) DiskBytes() (int64, error) {
	var n int64
	err := s.view(func(tx *bolt.Tx) error {
		n = tx.Size()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: disk size: %w", err)
	}
	return n, nil
}

// classify names the cause of a failed transaction, so that the layers
// above can tell "no room" (ErrFull) from other disk failures (ErrIO)
// with errors.Is, without knowing about errno values.
func classify(err error) error {
	switch {
	case errors.Is(err, ErrFull), errors.Is(err, ErrIO), errors.Is(err, ErrCorrupt):
		return err
	case errors.Is(err, berrors.ErrMaxSizeReached) || errors.Is(err, syscall.ENOSPC) ||
		errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG):
		return fmt.Errorf("%w: %w", ErrFull, err)
	}
	return fmt.Errorf("%w: %w", ErrIO, err)
}

// Faults makes a store's write transactions fail on demand, as a full or
// failing disk would, so that tests and fault drills reach the paths
// above the store (refusals, temporary SMTP and IMAP replies) without
// filling a real disk. Reads are unaffected. The zero value injects
// nothing; methods are safe for concurrent use.
type Faults struct{ err atomic.Pointer[error] }

// Fail makes every write transaction from now on fail at its commit with
// err, classified as a real disk error is (syscall.ENOSPC gives an error
// matching ErrFull, syscall.EIO one matching ErrIO). Fail(nil) ends the
// fault.
func (f *Faults) Fail(err error) {
	if err == nil {
		f.err.Store(nil)
		return
	}
	f.err.Store(&err)
}

// fault is the error to inject, nil for none.
func (f *Faults) fault() error {
	if f == nil {
		return nil
	}
	if p := f.err.Load(); p != nil {
		return *p
	}
	return nil
}
