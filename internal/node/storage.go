package node

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/glacier"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/store"
)

// loopStorage adapts a store.Store to past.Storage: the store completes
// writes on its committer goroutine, and PAST must see completions on the
// node's event loop, so each one is posted there. Reads and the periodic
// SetTicks and Sweep run on the loop directly (a sweep's fsync, once a
// minute, briefly holds the loop; nothing acknowledged waits on it). The
// periodic scrub reads a slice of the disk, so it runs on a goroutine of
// its own and posts its report back; PAST starts one slice at a time.
type loopStorage struct {
	st   *store.Store
	loop *Loop
}

var _ past.Storage = loopStorage{}

func (s loopStorage) onLoop(done func(error)) func(error) {
	return func(err error) {
		// After Close the loop is gone and so is the request waiting for
		// this completion; dropping it is right.
		s.loop.Post(func() { done(err) })
	}
}

func (s loopStorage) Get(kind store.Kind, key store.Key) ([]byte, error) { return s.st.Get(kind, key) }
func (s loopStorage) Has(kind store.Kind, key store.Key) (bool, error)   { return s.st.Has(kind, key) }
func (s loopStorage) Lease(kind store.Kind, key store.Key) (env.Time, error) {
	return s.st.Lease(kind, key)
}
func (s loopStorage) Ticks() env.Time           { return s.st.Ticks() }
func (s loopStorage) SetTicks(t env.Time) error { return s.st.SetTicks(t) }
func (s loopStorage) PutAsync(kind store.Kind, key store.Key, data []byte, expiry env.Time, done func(error)) {
	s.st.PutAsync(kind, key, data, expiry, s.onLoop(done))
}
func (s loopStorage) ExtendLeaseAsync(kind store.Kind, key store.Key, expiry env.Time, done func(error)) {
	s.st.ExtendLeaseAsync(kind, key, expiry, s.onLoop(done))
}
func (s loopStorage) Keys(kind store.Kind, r store.Range, after *store.Key, limit int) ([]store.Key, bool, error) {
	return s.st.Keys(kind, r, after, limit)
}
func (s loopStorage) Sweep(limit int) (store.SweepReport, error) { return s.st.Sweep(limit) }
func (s loopStorage) ScrubAsync(c store.ScrubCursor, n int, done func(store.ScrubReport, error)) {
	go func() {
		rep, err := s.st.Scrub(c, n)
		// After Close the store refuses and the loop drops the report.
		s.loop.Post(func() { done(rep, err) })
	}()
}

// openPast opens the store under DataDir and makes PAST over it, with the
// node's application above.
func (n *Node) openPast(e env.Env) error {
	if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
		return err
	}
	scfg := n.cfg.Store
	if scfg == (store.Config{}) {
		scfg = store.DefaultConfig()
	}
	scfg.Observer = &diskHealth{next: scfg.Observer, log: n.log}
	st, err := store.Open(filepath.Join(n.cfg.DataDir, "store.db"), scfg)
	if err != nil {
		return err
	}
	pcfg := n.cfg.Past
	if pcfg.Replicas == 0 {
		pcfg = past.DefaultConfig()
	}
	// The newest revocation list this node learned before it stopped.
	if b, err := st.GetMeta(revocationMeta); err == nil {
		if _, err := n.verifier.Adopt(b); err != nil {
			n.log.Warn("stored revocation list refused", "err", err)
		}
	}
	gcfg := n.cfg.Glacier
	if gcfg.Code.N == 0 {
		c := n.cfg.Community
		if c <= 0 {
			c = 1000
		}
		gcfg = glacier.ConfigFor(c)
	}
	if n.cfg.ArchiveDelay > 0 {
		gcfg.ArchiveDelay = n.cfg.ArchiveDelay
	}
	ls := loopStorage{st: st, loop: n.loop}
	g, err := glacier.New(gcfg, e, ls, n.verifier, n.app)
	if err != nil {
		st.Close()
		return err
	}
	ident := past.Identity{Key: n.cfg.Key, Cert: n.cfg.Cert, Verifier: n.verifier}
	p, err := past.New(pcfg, e, ls, ident, g)
	if err != nil {
		st.Close()
		return err
	}
	n.st, n.past, n.gl = st, p, g
	return nil
}

// diskHealth watches the store's write completions and logs a run of
// disk failures once, when it starts, and once more when writes succeed
// again: a full disk fails every write until someone makes room, and a
// line per write would bury everything else. The store counts the
// failures (Stats.WriteErrors).
type diskHealth struct {
	next store.Observer // the configured observer, if any
	log  *slog.Logger

	mu     sync.Mutex
	failed uint64 // writes failed in the current run; 0 while healthy
}

// Observe implements store.Observer.
func (h *diskHealth) Observe(ev store.Event) {
	if h.next != nil {
		h.next.Observe(ev)
	}
	if ev.Type != store.EventCompleted {
		return
	}
	disk := errors.Is(ev.Err, store.ErrFull) || errors.Is(ev.Err, store.ErrIO) || errors.Is(ev.Err, store.ErrCorrupt)
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case disk:
		if h.failed == 0 {
			h.log.Error("store: disk writes failing; this node stores nothing (no replicas, no folder changes) until they succeed", "err", ev.Err)
		}
		h.failed++
	case ev.Err == nil && h.failed > 0:
		h.log.Warn("store: disk writes succeed again", "failed", h.failed)
		h.failed = 0
	}
}
