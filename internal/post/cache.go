package post

import (
	"github.com/epost-mail/epost/internal/store/object"
)

// fetch reads one of the folder's log objects (an entry or a snapshot
// part): from this node's cache if it holds it, else from the network.
func (f *Folder) fetch(key object.Key, done func([]byte, error)) {
	f.a.x.past.Lookup(key, func(b []byte, err error) {
		if err == nil {
			f.cachePut(key, b)
		}
		done(b, err)
	})
}

// cachePut keeps a log object in this node's cache.
func (f *Folder) cachePut(key object.Key, b []byte) {}

// checkpointed notes a durable checkpoint: its parts are what the next
// one may reuse, and the log before it need no longer be kept leased.
func (f *Folder) checkpointed(chunks []chunkState) {
	f.chunks = chunks
	f.entries = f.entries[:0]
	for _, c := range chunks {
		f.entries = append(f.entries, c.ref.Key)
	}
}
