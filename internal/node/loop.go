package node

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/epost-mail/epost/internal/env"
)

// ErrStopped is returned by Do (and reported by Post) once the loop has
// stopped.
var ErrStopped = errors.New("node: event loop stopped")

// Loop is a node's event loop: one goroutine that runs posted funcs one at
// a time, in the order they were posted. It is also the node's env.Clock,
// whose timers fire by posting onto the loop, so every callback a core
// sees runs on this one goroutine, as the simulator runs them.
//
// Posting never blocks (the queue is unbounded); the transport bounds what
// it posts. Funcs posted before Start wait for it; funcs still queued when
// Stop is called are dropped, and nothing posted afterwards runs.
type Loop struct {
	start     time.Time    // the monotonic reading that Now counts from
	wallShift atomic.Int64 // microseconds JumpWall added to the wall clock

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []func()
	stopped bool
	started bool
	halted  atomic.Bool // stopped, readable without the lock between funcs

	done chan struct{} // closed when the goroutine exits
}

var _ env.Clock = (*Loop)(nil)

// NewLoop returns a loop that is not yet running; its clock starts now.
func NewLoop() *Loop {
	l := &Loop{start: time.Now(), done: make(chan struct{})}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// Start starts the loop's goroutine. Calling it again does nothing.
func (l *Loop) Start() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started || l.stopped {
		return
	}
	l.started = true
	go l.run()
}

func (l *Loop) run() {
	defer close(l.done)
	var batch []func()
	for {
		l.mu.Lock()
		for len(l.queue) == 0 && !l.stopped {
			l.cond.Wait()
		}
		if l.stopped {
			l.queue = nil
			l.mu.Unlock()
			return
		}
		// Swap buffers so posters append to a fresh slice while this
		// batch runs without the lock.
		batch, l.queue = l.queue, batch[:0]
		l.mu.Unlock()
		for i, f := range batch {
			if l.halted.Load() {
				return
			}
			f()
			batch[i] = nil // drop the reference so the closure can be collected
		}
	}
}

// Post queues f to run on the loop. It reports false, and drops f, when
// the loop has stopped. Safe from any goroutine, including the loop's.
func (l *Loop) Post(f func()) bool {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return false
	}
	l.queue = append(l.queue, f)
	l.mu.Unlock()
	l.cond.Signal()
	return true
}

// Do runs f on the loop and waits for it to finish: the way for other
// goroutines (tests, the status page) to read a core's state safely. It
// returns ErrStopped, without running f, if the loop stops first. It must
// not be called from the loop itself, which would wait for itself.
func (l *Loop) Do(f func()) error {
	ran := make(chan struct{})
	if !l.Post(func() { f(); close(ran) }) {
		return ErrStopped
	}
	select {
	case <-ran:
		return nil
	case <-l.done:
		// The loop may have run f just before stopping.
		select {
		case <-ran:
			return nil
		default:
			return ErrStopped
		}
	}
}

// Stop stops the loop after the func running now, drops what is queued,
// and waits for the goroutine to exit. Timers that fire later post into
// the stopped loop and so never run. It must not be called from the loop.
func (l *Loop) Stop() {
	l.mu.Lock()
	l.stopped = true
	l.halted.Store(true)
	started := l.started
	l.mu.Unlock()
	l.cond.Broadcast()
	if started {
		<-l.done
	}
}

// Now is the time since the loop was made, in ticks (microseconds), on the
// monotonic clock, so it never goes backwards when the wall clock jumps.
func (l *Loop) Now() env.Time {
	return env.Time(time.Since(l.start) / time.Microsecond)
}

// Wall is the wall clock in microseconds since the Unix epoch, moved by
// any JumpWall.
func (l *Loop) Wall() int64 { return time.Now().UnixMicro() + l.wallShift.Load() }

// JumpWall moves the wall clock the protocol sees by d, as when the
// machine's clock is set wrong or corrected: a fault tests inject. The
// monotonic clock (Now) does not move.
func (l *Loop) JumpWall(d time.Duration) { l.wallShift.Add(d.Microseconds()) }

// maxDelay keeps a tick count's conversion to time.Duration from
// overflowing (about 292 years).
const maxDelay = env.Duration(1<<63-1) / env.Duration(time.Microsecond)

// AfterFunc runs f on the loop once d ticks have passed. As in the
// simulator, a timer that was stopped never runs, even if it was already
// due and waiting in the queue.
func (l *Loop) AfterFunc(d env.Duration, f func()) env.Timer {
	if d < 0 {
		d = 0
	}
	if d > maxDelay {
		d = maxDelay
	}
	t := &loopTimer{}
	t.t = time.AfterFunc(time.Duration(d)*time.Microsecond, func() {
		l.Post(func() {
			// Settled on the loop, where Stop is normally called: whichever
			// of "run" and "stop" comes first wins.
			if t.done.CompareAndSwap(false, true) {
				f()
			}
		})
	})
	return t
}

// loopTimer is a Loop timer.
type loopTimer struct {
	t    *time.Timer
	done atomic.Bool // ran or stopped
}

// Stop cancels the timer; it reports whether f had not yet run.
func (t *loopTimer) Stop() bool {
	if !t.done.CompareAndSwap(false, true) {
		return false
	}
	t.t.Stop()
	return true
}

// JumpWallClock moves this node's wall clock by d (a fault tests inject:
// a machine whose clock jumps). Leases count renewals, not dates, and the
// overlay rejoins when the wall clock leaves the monotonic one, so the
// node must carry on. Safe to call from any goroutine.
func (n *Node) JumpWallClock(d time.Duration) { n.loop.JumpWall(d) }
