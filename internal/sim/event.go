package sim

import (
	"github.com/epost-mail/epost/internal/env"
)

type eventKind uint8

const (
	evFunc  eventKind = iota // engine-level action
	evTimer                  // a host's timer
	evMsg                    // a message arriving at a host
	evFail                   // a reliable send's failure report to its sender
)

// event is kept by value in the queue: one allocation-free slot per event
// for messages, the common case.
type event struct {
	at       env.Time
	seq      uint64
	kind     eventKind
	reliable bool
	host     HostID // the host the event happens at
	from     HostID // sender of a message
	inc      uint32 // incarnation of host the event is bound to
	fromInc  uint32 // sender's incarnation, for failure reports
	msg      []byte
	timer    *timer
	fn       func()
	fail     func(error)
}

func (e *event) less(o *event) bool {
	if e.at != o.at {
		return e.at < o.at
	}
	return e.seq < o.seq
}

// eventQueue is a binary min-heap ordered by (at, seq). Hand-written rather
// than container/heap to avoid boxing every event in an interface.
type eventQueue []event

func (q *eventQueue) push(ev event) {
	*q = append(*q, ev)
	h := *q
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h[i].less(&h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (q *eventQueue) pop() event {
	h := *q
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h[n] = event{} // drop references for the garbage collector
	h = h[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h[r].less(&h[l]) {
			m = r
		}
		if !h[m].less(&h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	*q = h
	return top
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func (s *Sim) traceEvent(ev *event) {
	h := s.trace
	mix := func(v uint64) {
		for i := 0; i < 8; i++ {
			h ^= v & 0xff
			h *= fnvPrime
			v >>= 8
		}
	}
	mix(uint64(ev.at))
	mix(uint64(ev.kind))
	mix(uint64(uint32(ev.host)))
	mix(uint64(uint32(ev.from)))
	mix(uint64(len(ev.msg)))
	for _, b := range ev.msg {
		h ^= uint64(b)
		h *= fnvPrime
	}
	s.trace = h
}
