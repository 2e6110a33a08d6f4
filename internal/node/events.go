package node

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Event is one recent notable thing a node logged (info and above), for
// the status page: joins, failures detected, refusals, repairs.
type Event struct {
	Time  string `json:"time"` // RFC 3339
	Level string `json:"level"`
	Msg   string `json:"msg"`
	Attrs string `json:"attrs,omitempty"` // key=value pairs
}

// maxEvents is how many recent events a node keeps.
const maxEvents = 50

// eventRing keeps a node's most recent events.
type eventRing struct {
	mu     sync.Mutex
	events []Event
	next   int
	full   bool
}

func (r *eventRing) add(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.events == nil {
		r.events = make([]Event, maxEvents)
	}
	r.events[r.next] = e
	r.next = (r.next + 1) % maxEvents
	if r.next == 0 {
		r.full = true
	}
}

// recent returns the events, newest first.
func (r *eventRing) recent() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = maxEvents
	}
	out := make([]Event, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, r.events[(r.next-i+maxEvents)%maxEvents])
	}
	return out
}

// eventHandler passes records on and keeps those at info and above.
type eventHandler struct {
	next  slog.Handler
	ring  *eventRing
	attrs []slog.Attr
}

func (h eventHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h eventHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelInfo {
		var b strings.Builder
		add := func(a slog.Attr) bool {
			if a.Key == "node" {
				return true // every event is this node's
			}
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%s=%v", a.Key, a.Value)
			return true
		}
		for _, a := range h.attrs {
			add(a)
		}
		r.Attrs(add)
		t := r.Time
		if t.IsZero() {
			t = time.Now()
		}
		h.ring.add(Event{Time: t.UTC().Format(time.RFC3339), Level: r.Level.String(), Msg: r.Message, Attrs: b.String()})
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h eventHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return eventHandler{next: h.next.WithAttrs(as), ring: h.ring, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h eventHandler) WithGroup(name string) slog.Handler {
	return eventHandler{next: h.next.WithGroup(name), ring: h.ring, attrs: h.attrs}
}
