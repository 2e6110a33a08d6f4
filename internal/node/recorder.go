package node

import (
	"github.com/epost-mail/epost/internal/overlay"
)

// recentLen is how many deliveries a Recorder keeps for display.
const recentLen = 64

// Recorder is the application a node runs until the storage and mail
// layers sit on the overlay: it counts what reaches this node, keeps the
// latest deliveries, and passes each upcall to optional hooks, so a test
// can route messages and see where they land.
//
// Like every App it is driven on the node's event loop: set the hooks
// before Start, read it only inside Node.Do, and keep hooks short and safe
// to call from the loop goroutine (a test's hook must synchronise with the
// test's own goroutine).
type Recorder struct {
	// OnDeliver, when set, is called for every message delivered here as
	// the root of its key.
	OnDeliver func(m overlay.Message)
	// OnDirect, when set, is called for every direct payload.
	OnDirect func(from overlay.NodeHandle, payload []byte)
	// OnLeafSetChanged, when set, is called when a node enters or leaves
	// the leaf set.
	OnLeafSetChanged func(h overlay.NodeHandle, joined bool)

	delivered   uint64
	direct      uint64
	leafChanges uint64
	recent      []overlay.Message // ring of the latest deliveries
	next        int
}

var _ overlay.App = (*Recorder)(nil)

// Deliver records m and calls OnDeliver.
func (r *Recorder) Deliver(m overlay.Message) {
	r.delivered++
	if len(r.recent) < recentLen {
		r.recent = append(r.recent, m)
	} else {
		r.recent[r.next] = m
		r.next = (r.next + 1) % recentLen
	}
	if r.OnDeliver != nil {
		r.OnDeliver(m)
	}
}

// Forward lets every message pass.
func (r *Recorder) Forward(*overlay.Message, overlay.NodeHandle) bool { return true }

// Direct counts the payload and calls OnDirect.
func (r *Recorder) Direct(from overlay.NodeHandle, payload []byte) {
	r.direct++
	if r.OnDirect != nil {
		r.OnDirect(from, payload)
	}
}

// LeafSetChanged counts the change and calls OnLeafSetChanged.
func (r *Recorder) LeafSetChanged(h overlay.NodeHandle, joined bool) {
	r.leafChanges++
	if r.OnLeafSetChanged != nil {
		r.OnLeafSetChanged(h, joined)
	}
}

// Delivered is the number of messages delivered here.
func (r *Recorder) Delivered() uint64 { return r.delivered }

// Recent returns the latest deliveries, oldest first (a copy).
func (r *Recorder) Recent() []overlay.Message {
	out := make([]overlay.Message, 0, len(r.recent))
	out = append(out, r.recent[r.next:]...)
	return append(out, r.recent[:r.next]...)
}
