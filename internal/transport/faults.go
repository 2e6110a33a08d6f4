package transport

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/epost-mail/epost/internal/env"
)

// ErrBlocked is reported to SendReliable callbacks for messages to a peer
// that Config.Faults blocks.
var ErrBlocked = errors.New("transport: link blocked by fault injection")

// Faults cuts this node's links to chosen peers, for tests and fault drills
// only: it reproduces the broken links and partitions of DESIGN.md section 4
// on real hosts. A blocked peer is treated as unreachable in both
// directions: Send to it drops the message silently, SendReliable fails it
// with ErrBlocked (through Config.Post, as a real unreachable peer's failure
// arrives), and frames arriving from it are discarded unread by the node.
// Connections and streams stay open, as they would behind a broken route,
// so unblocking restores the link at once.
//
// Peers are matched by the peer ID at the end of their address, so a peer
// stays blocked at whatever address it uses. Blocking one end of a link is
// enough to cut it, but the other end's reliable sends are then lost
// unreported (its stream was accepted); block both ends to have both see
// send failures. Messages already queued for a peer when it is blocked may
// still leave.
//
// The zero value blocks nothing; a nil *Faults blocks nothing and must not
// be changed. Methods are safe for concurrent use.
type Faults struct {
	mu      sync.RWMutex
	blocked map[string]bool // peer IDs (see peerPart)
	n       atomic.Int32    // len(blocked): the common case skips the lock
	dropped atomic.Uint64
}

// Block cuts the links to the peers at addrs. Addresses without a /p2p/
// peer ID are ignored.
func (f *Faults) Block(addrs ...env.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.blocked == nil {
		f.blocked = map[string]bool{}
	}
	for _, a := range addrs {
		if p := peerPart(a); p != "" {
			f.blocked[p] = true
		}
	}
	f.n.Store(int32(len(f.blocked)))
}

// Unblock restores the links to the peers at addrs.
func (f *Faults) Unblock(addrs ...env.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range addrs {
		delete(f.blocked, peerPart(a))
	}
	f.n.Store(int32(len(f.blocked)))
}

// UnblockAll restores every link.
func (f *Faults) UnblockAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.blocked)
	f.n.Store(0)
}

// Blocked reports whether the peer at a is blocked.
func (f *Faults) Blocked(a env.Addr) bool {
	if f == nil || f.n.Load() == 0 {
		return false
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.blocked[peerPart(a)]
}

// Dropped is the number of messages discarded because of a block, sent
// and received.
func (f *Faults) Dropped() uint64 {
	if f == nil {
		return 0
	}
	return f.dropped.Load()
}

// drop reports whether a message to or from a must be discarded, and
// counts it if so.
func (f *Faults) drop(a env.Addr) bool {
	if !f.Blocked(a) {
		return false
	}
	f.dropped.Add(1)
	return true
}
