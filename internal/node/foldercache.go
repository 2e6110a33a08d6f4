package node

import (
	"log/slog"
	"sync"

	"github.com/epost-mail/epost/internal/post"
	"github.com/epost-mail/epost/internal/store"
	"github.com/epost-mail/epost/internal/store/object"
)

// folderCache is POST's folder cache (post.Cache) on the node's disk: the
// sealed log objects of the users served here, in the store's metadata
// under "post/obj/<key>". They are the bytes PAST stores, encrypted with
// the user's log key.
//
// Writes go behind the loop: a writer goroutine commits them, so that a
// folder flush does not wait for a second sync (its head's SetMeta, on the
// loop, usually shares the commit). Reads see writes not yet committed. A
// crash may lose the last writes; POST then reads those objects from the
// network.
type folderCache struct {
	st  *store.Store
	log *slog.Logger

	mu       sync.Mutex
	pending  map[object.Key][]byte // to write; nil data: to delete
	inflight map[object.Key][]byte // being written
	closed   bool
	kick     chan struct{}
	done     chan struct{}
}

var _ post.Cache = (*folderCache)(nil)

func newFolderCache(st *store.Store, log *slog.Logger) *folderCache {
	c := &folderCache{st: st, log: log, pending: map[object.Key][]byte{}, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go c.run()
	return c
}

func cacheMeta(k object.Key) string { return "post/obj/" + k.String() }

// GetObject implements post.Cache.
func (c *folderCache) GetObject(k object.Key) ([]byte, bool) {
	c.mu.Lock()
	b, ok := c.pending[k]
	if !ok {
		b, ok = c.inflight[k]
	}
	c.mu.Unlock()
	if ok {
		return b, b != nil
	}
	b, err := c.st.GetMeta(cacheMeta(k))
	if err != nil {
		return nil, false
	}
	return b, true
}

// PutObject implements post.Cache.
func (c *folderCache) PutObject(k object.Key, data []byte) {
	c.queue(k, append([]byte{}, data...))
}

// DeleteObject implements post.Cache.
func (c *folderCache) DeleteObject(k object.Key) { c.queue(k, nil) }

func (c *folderCache) queue(k object.Key, data []byte) {
	c.mu.Lock()
	if !c.closed {
		c.pending[k] = data
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run writes what is queued until Close.
func (c *folderCache) run() {
	defer close(c.done)
	for range c.kick {
		c.mu.Lock()
		batch := c.pending
		c.pending = map[object.Key][]byte{}
		c.inflight = batch
		closed := c.closed
		c.mu.Unlock()
		for k, data := range batch {
			var err error
			if data == nil {
				err = c.st.DeleteMeta(cacheMeta(k))
			} else {
				err = c.st.SetMeta(cacheMeta(k), data)
			}
			if err != nil {
				c.log.Warn("post: folder cache write failed (the network still has the object)", "key", k.Short(), "err", err)
			}
		}
		c.mu.Lock()
		c.inflight = nil
		c.mu.Unlock()
		if closed {
			return
		}
	}
}

// Close writes what is queued and stops the writer; call it before the
// store closes.
func (c *folderCache) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	// The writer takes the closed flag with its next batch: this kick (or
	// one already queued) makes it write everything and return.
	select {
	case c.kick <- struct{}{}:
	default:
	}
	<-c.done
}
