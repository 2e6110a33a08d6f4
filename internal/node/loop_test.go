package node

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/env"
)

func TestLoopRunsPostedFuncsInOrder(t *testing.T) {
	l := NewLoop()
	var got []int
	for i := range 100 {
		l.Post(func() { got = append(got, i) }) // posted before Start: they wait
	}
	l.Start()
	defer l.Stop()
	if err := l.Do(func() {}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := l.Do(func() { n = len(got) }); err != nil {
		t.Fatal(err)
	}
	if n != 100 {
		t.Fatalf("ran %d funcs, want 100", n)
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("func %d ran as number %d", v, i)
		}
	}
}

func TestLoopTimers(t *testing.T) {
	l := NewLoop()
	l.Start()
	defer l.Stop()

	fired := make(chan env.Time, 1)
	var start env.Time
	if err := l.Do(func() {
		start = l.Now()
		l.AfterFunc(20*env.Millisecond, func() { fired <- l.Now() })
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-fired:
		if d := at.Sub(start); d < 20*env.Millisecond {
			t.Fatalf("timer fired after %d ticks, want >= 20ms", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("timer never fired")
	}

	// A timer stopped before it is due never runs, and Stop says so.
	var ran atomic.Bool
	var stopped bool
	if err := l.Do(func() {
		tm := l.AfterFunc(10*env.Millisecond, func() { ran.Store(true) })
		stopped = tm.Stop()
	}); err != nil {
		t.Fatal(err)
	}
	if !stopped {
		t.Fatal("Stop of a pending timer reported false")
	}

	// A timer that is already due and queued behind the running func is
	// still cancelled by Stop, as in the simulator.
	var late bool
	if err := l.Do(func() {
		tm := l.AfterFunc(0, func() { ran.Store(true) })
		// Wait until it has fired and queued itself behind us.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			l.mu.Lock()
			queued := len(l.queue) > 0
			l.mu.Unlock()
			if queued {
				break
			}
		}
		late = tm.Stop()
	}); err != nil {
		t.Fatal(err)
	}
	if !late {
		t.Fatal("Stop of a due but unrun timer reported false")
	}

	// A timer that ran cannot be stopped.
	done := make(chan struct{})
	var tm env.Timer
	if err := l.Do(func() { tm = l.AfterFunc(0, func() { close(done) }) }); err != nil {
		t.Fatal(err)
	}
	<-done
	if err := l.Do(func() {
		if tm.Stop() {
			t.Error("Stop of a timer that ran reported true")
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := l.Do(func() {}); err != nil { // flush anything queued
		t.Fatal(err)
	}
	if ran.Load() {
		t.Fatal("a stopped timer ran")
	}
}

func TestLoopStop(t *testing.T) {
	l := NewLoop()
	l.Start()
	block := make(chan struct{})
	entered := make(chan struct{})
	l.Post(func() { close(entered); <-block })
	<-entered
	var ran atomic.Bool
	l.Post(func() { ran.Store(true) })
	stopped := make(chan struct{})
	go func() { l.Stop(); close(stopped) }()
	// Stop waits for the running func; let it finish only once Stop has
	// marked the loop stopped.
	for l.Post(func() {}) {
		time.Sleep(time.Millisecond)
	}
	close(block)
	<-stopped
	if ran.Load() {
		t.Fatal("a func queued before Stop ran after it")
	}
	if err := l.Do(func() { t.Error("Do ran after Stop") }); !errors.Is(err, ErrStopped) {
		t.Fatalf("Do after Stop: %v", err)
	}
	if l.Post(func() { t.Error("func ran after Stop") }) {
		t.Fatal("Post after Stop accepted the func")
	}
}

func TestLoopClockIsMonotonicMicroseconds(t *testing.T) {
	l := NewLoop()
	a := l.Now()
	time.Sleep(2 * time.Millisecond)
	b := l.Now()
	if b.Sub(a) < 2*env.Millisecond || b.Sub(a) > 2*env.Second {
		t.Fatalf("2 ms measured as %d ticks", b.Sub(a))
	}
	if w := l.Wall(); w < time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro() {
		t.Fatalf("Wall = %d", w)
	}
}
