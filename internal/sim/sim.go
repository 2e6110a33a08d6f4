// Package sim is a single-threaded discrete-event simulator that runs many
// protocol cores in one process on virtual time. It is an engine only: it
// knows no protocol. Scenarios (internal/scenario) wire cores onto it.
//
// Invariants:
//   - Events run in (virtual time, sequence number) order; the sequence
//     number breaks ties in scheduling order, so equal-time events never
//     depend on heap or map order.
//   - All randomness comes from the run's seed: the engine's own generator
//     (placement, loss, churn) and one generator per host incarnation. The
//     same seed and the same calls give a byte-identical run.
//   - Nothing here starts a goroutine or reads the wall clock; time only
//     moves when the next event is taken from the queue.
//   - Memory per host is constant: latency is computed per pair from the
//     hosts' coordinates, never stored per pair, so 50,000 hosts fit.
package sim

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"

	"github.com/epost-mail/epost/internal/env"
)

// HostID indexes a simulated host. Host ids are dense from 0.
type HostID int32

// None is the HostID of engine-level events that belong to no host.
const None HostID = -1

// ErrUnreachable is reported to a reliable sender whose destination is
// down, partitioned away, or across a broken link.
var ErrUnreachable = errors.New("sim: destination unreachable")

// Process is a protocol core (or a composition of cores) running on a
// simulated host: the engine hands it every message that reaches the host.
type Process interface {
	Receive(from env.Addr, msg []byte)
}

// StartFunc boots a process on a host. It is called when the host is added
// and again on every restart, with a fresh env for the new incarnation;
// state the process should keep across a crash (its disk) lives outside it.
type StartFunc func(e env.Env) Process

// Config sets the virtual world. Zero values take the defaults of
// DefaultConfig where noted.
type Config struct {
	// Seed reproduces a run.
	Seed uint64
	// MinLatency and MaxLatency bound one-way latency: hosts sit at random
	// points of a unit square and latency grows linearly with distance.
	MinLatency, MaxLatency env.Duration
	// Jitter adds up to this much random delay to unreliable messages
	// (reliable ones keep per-link FIFO order and get none).
	Jitter env.Duration
	// Loss is the probability that an unreliable message is dropped.
	Loss float64
	// FailAfter is how long a reliable sender waits before hearing that its
	// destination is unreachable (a TCP-like connection failure).
	FailAfter env.Duration
	// InvariantEvery runs the invariant checks after every k-th event
	// (1 = every event). 0 disables them.
	InvariantEvery int
	// Trace folds every processed event into a hash (TraceHash), for
	// determinism checks. Costs a pass over each message's bytes.
	Trace bool
	// LogHandler, when set, receives the hosts' log records, each with the
	// host's address and the virtual time. Nil discards them.
	LogHandler slog.Handler
}

// DefaultConfig is a wide-area world: 5-150 ms one-way latency, no loss.
func DefaultConfig(seed uint64) Config {
	return Config{
		Seed:           seed,
		MinLatency:     5 * env.Millisecond,
		MaxLatency:     150 * env.Millisecond,
		FailAfter:      2 * env.Second, // a refused or timed-out dial, roughly
		InvariantEvery: 1,
	}
}

// Stats counts what happened in a run.
type Stats struct {
	Events      uint64 // events processed (messages, timers, engine actions)
	Sent        uint64 // messages handed to the network
	Delivered   uint64 // messages that reached a live process
	Lost        uint64 // unreliable messages dropped by random loss
	Unreachable uint64 // messages dropped because the destination was down or cut off
	Bytes       uint64 // bytes handed to the network
	Timers      uint64 // timer callbacks run
	Crashes     uint64
	Restarts    uint64
}

type host struct {
	x, y     float32
	group    int32 // partition group; only hosts of one group reach each other
	up       bool
	inc      uint32       // incarnation, bumped on every crash
	boot     env.Time     // global time of the current boot
	wallSkew env.Duration // wall clock offset from true time
	ratePPM  int32        // monotonic clock rate error, parts per million
	paused   env.Time     // events for the host wait until this global time
	extra    env.Duration // added to every one-way latency to and from the host
	addr     env.Addr
	start    StartFunc
	proc     Process
	net      *hostNet
	clock    *hostClock
}

// Sim is the engine. It is not safe for concurrent use: everything runs on
// the caller's goroutine.
type Sim struct {
	cfg        Config
	now        env.Time
	seq        uint64
	queue      eventQueue
	hosts      []host
	rng        *mrand.Rand
	broken     map[uint64]struct{}
	invariants []invariant
	sinceCheck int
	violation  error
	stats      Stats
	trace      uint64
	stopped    bool
}

type invariant struct {
	name  string
	check func() error
}

// New returns an empty world.
func New(cfg Config) *Sim {
	d := DefaultConfig(cfg.Seed)
	if cfg.MaxLatency == 0 {
		cfg.MinLatency, cfg.MaxLatency = d.MinLatency, d.MaxLatency
	}
	if cfg.FailAfter == 0 {
		cfg.FailAfter = d.FailAfter
	}
	return &Sim{
		cfg:    cfg,
		rng:    mrand.New(mrand.NewPCG(cfg.Seed, 0x5eed_e905_7000_0001)),
		broken: make(map[uint64]struct{}),
		trace:  fnvOffset,
	}
}

// Now is the global virtual time since the start of the run.
func (s *Sim) Now() env.Time { return s.now }

// Seed is the run's seed.
func (s *Sim) Seed() uint64 { return s.cfg.Seed }

// Rand is the engine's generator, for scenarios' workload choices. Using it
// keeps a run reproducible by its seed.
func (s *Sim) Rand() *mrand.Rand { return s.rng }

// Stats returns the counters so far.
func (s *Sim) Stats() Stats { return s.stats }

// TraceHash is a hash of every event processed so far (Config.Trace).
func (s *Sim) TraceHash() uint64 { return s.trace }

// Len is the number of hosts ever added.
func (s *Sim) Len() int { return len(s.hosts) }

// Pending is the number of queued events.
func (s *Sim) Pending() int { return len(s.queue) }

// Add places a new host at a random point and boots it now.
func (s *Sim) Add(start StartFunc) HostID {
	h := s.AddDown(start)
	s.Restart(h)
	return h
}

// AddDown places a new host that stays down until Restart.
func (s *Sim) AddDown(start StartFunc) HostID {
	h := HostID(len(s.hosts))
	s.hosts = append(s.hosts, host{
		x:     float32(s.rng.Float64()),
		y:     float32(s.rng.Float64()),
		addr:  AddrOf(h),
		start: start,
	})
	return h
}

// Up reports whether host h is running.
func (s *Sim) Up(h HostID) bool { return s.hosts[h].up }

// Process returns the process running on h, or nil when h is down.
func (s *Sim) Process(h HostID) Process {
	if !s.hosts[h].up {
		return nil
	}
	return s.hosts[h].proc
}

// Addr is host h's transport address.
func (s *Sim) Addr(h HostID) env.Addr { return s.hosts[h].addr }

// Crash stops host h at once: its process, timers and queued messages are
// gone; messages in flight to it are dropped on arrival.
func (s *Sim) Crash(h HostID) {
	hp := &s.hosts[h]
	if !hp.up {
		return
	}
	hp.up = false
	hp.inc++
	hp.proc = nil
	s.stats.Crashes++
}

// Restart boots a fresh process on h (a new incarnation with a monotonic
// clock starting again from zero). Restarting a running host crashes it
// first.
func (s *Sim) Restart(h HostID) {
	hp := &s.hosts[h]
	if hp.up {
		s.Crash(h)
	}
	hp.up = true
	hp.boot = s.now
	if hp.clock == nil {
		hp.clock = &hostClock{s: s, h: h}
		hp.net = &hostNet{s: s, h: h}
	}
	s.stats.Restarts++
	e := env.Env{
		Self:  hp.addr,
		Clock: hp.clock,
		Rand:  env.NewRand(s.cfg.Seed^0x9e3779b97f4a7c15, uint64(h)<<32|uint64(hp.inc)),
		Net:   hp.net,
		Log:   s.logger(h),
	}
	inc := hp.inc
	p := hp.start(e)
	// The start function may itself crash the host (or another); keep the
	// process only if this incarnation is still the live one.
	if hp = &s.hosts[h]; hp.up && hp.inc == inc {
		hp.proc = p
	}
}

// SetClock sets host h's clock error: its wall clock reads skew off true
// time and its monotonic clock runs ratePPM parts per million fast (or
// slow when negative).
func (s *Sim) SetClock(h HostID, skew env.Duration, ratePPM int32) {
	s.hosts[h].wallSkew = skew
	s.hosts[h].ratePPM = ratePPM
}

// Pause stops host h's process for d without crashing it, as SIGSTOP or a
// stalled event loop would: messages still arrive and timers still come
// due, but nothing runs until d has passed; then everything that waited
// runs in its original order. The host's monotonic clock keeps counting.
func (s *Sim) Pause(h HostID, d env.Duration) {
	if until := s.now.Add(d); until > s.hosts[h].paused {
		s.hosts[h].paused = until
	}
}

// Suspend is Pause for a machine that sleeps (a closed laptop): its
// monotonic clock stops while its wall clock goes on, so on waking the
// wall clock has jumped by d relative to the monotonic one.
func (s *Sim) Suspend(h HostID, d env.Duration) {
	s.Pause(h, d)
	s.hosts[h].boot += env.Time(d)
}

// Partition splits the hosts: each listed set becomes a group whose members
// reach each other only; hosts not listed form one more group together.
func (s *Sim) Partition(sets ...[]HostID) {
	for i := range s.hosts {
		s.hosts[i].group = 0
	}
	for g, set := range sets {
		for _, h := range set {
			s.hosts[h].group = int32(g + 1)
		}
	}
}

// Heal removes every partition.
func (s *Sim) Heal() { s.Partition() }

// BreakLink cuts the link between a and b in both directions while both
// keep their other links: connectivity becomes non-transitive.
func (s *Sim) BreakLink(a, b HostID) { s.broken[linkKey(a, b)] = struct{}{} }

// RepairLink restores a link cut by BreakLink.
func (s *Sim) RepairLink(a, b HostID) { delete(s.broken, linkKey(a, b)) }

// BrokenLinks is the number of links currently cut.
func (s *Sim) BrokenLinks() int { return len(s.broken) }

// Reachable reports whether a message from a to b would arrive now: b is
// up, both are in one partition group, and their link is not cut.
func (s *Sim) Reachable(a, b HostID) bool {
	ha, hb := &s.hosts[a], &s.hosts[b]
	if !hb.up || ha.group != hb.group {
		return false
	}
	if len(s.broken) > 0 {
		if _, cut := s.broken[linkKey(a, b)]; cut {
			return false
		}
	}
	return true
}

// Latency is the one-way latency between a and b, computed from their
// positions: MinLatency for co-located hosts, MaxLatency across the square.
func (s *Sim) Latency(a, b HostID) env.Duration {
	ha, hb := &s.hosts[a], &s.hosts[b]
	if a == b {
		return s.cfg.MinLatency + 2*ha.extra
	}
	dx, dy := float64(ha.x-hb.x), float64(ha.y-hb.y)
	frac := math.Sqrt(dx*dx+dy*dy) / math.Sqrt2
	return s.cfg.MinLatency + env.Duration(frac*float64(s.cfg.MaxLatency-s.cfg.MinLatency)) + ha.extra + hb.extra
}

// SetExtraLatency makes host h slow or its access link congested: d is
// added to the one-way latency of every message to or from it. Reliable
// messages keep FIFO order only because a link's latency is constant, so
// lowering d while reliable messages to or from h are in flight can let a
// later one overtake them: scenarios raise it, or lower it on a quiet host.
func (s *Sim) SetExtraLatency(h HostID, d env.Duration) { s.hosts[h].extra = d }

// AddInvariant registers a check run after events (Config.InvariantEvery).
// The first violation stops the run; Run* return it.
func (s *Sim) AddInvariant(name string, check func() error) {
	s.invariants = append(s.invariants, invariant{name, check})
}

// CheckInvariants runs every invariant now and returns the first violation.
func (s *Sim) CheckInvariants() error {
	for _, inv := range s.invariants {
		if err := inv.check(); err != nil {
			return fmt.Errorf("sim: invariant %q violated at %s (seed %d): %w",
				inv.name, FormatTime(s.now), s.cfg.Seed, err)
		}
	}
	return nil
}

// At schedules an engine-level action at global time t (not before now).
func (s *Sim) At(t env.Time, f func()) {
	if t < s.now {
		t = s.now
	}
	s.push(event{at: t, kind: evFunc, host: None, fn: f})
}

// After schedules an engine-level action d from now.
func (s *Sim) After(d env.Duration, f func()) { s.At(s.now.Add(d), f) }

// Stop makes the current Run* call return after the event in progress.
func (s *Sim) Stop() { s.stopped = true }

// Step processes one event. It reports false when the queue is empty.
func (s *Sim) Step() bool {
	if len(s.queue) == 0 {
		return false
	}
	ev := s.queue.pop()
	s.now = ev.at
	s.stats.Events++
	if s.cfg.Trace {
		s.traceEvent(&ev)
	}
	s.dispatch(&ev)
	if s.cfg.InvariantEvery > 0 && len(s.invariants) > 0 && s.violation == nil {
		s.sinceCheck++
		if s.sinceCheck >= s.cfg.InvariantEvery {
			s.sinceCheck = 0
			s.violation = s.CheckInvariants()
		}
	}
	return true
}

// RunUntil processes events up to and including global time t, then sets
// the clock to t. It returns the first invariant violation, if any.
func (s *Sim) RunUntil(t env.Time) error {
	s.stopped = false
	for len(s.queue) > 0 && s.queue[0].at <= t && !s.stopped && s.violation == nil {
		s.Step()
	}
	if !s.stopped && s.violation == nil && s.now < t {
		s.now = t
	}
	return s.violation
}

// RunFor runs d of virtual time from now.
func (s *Sim) RunFor(d env.Duration) error { return s.RunUntil(s.now.Add(d)) }

// RunWhile processes events while cond holds, up to global time limit. It
// reports whether cond became false (as opposed to hitting the limit).
func (s *Sim) RunWhile(cond func() bool, limit env.Time) (bool, error) {
	s.stopped = false
	for cond() {
		if len(s.queue) == 0 || s.queue[0].at > limit || s.stopped || s.violation != nil {
			return false, s.violation
		}
		s.Step()
	}
	return true, s.violation
}

func (s *Sim) dispatch(ev *event) {
	if ev.host != None && s.now < s.hosts[ev.host].paused {
		// The host is paused: the event waits. Re-queued in pop order, so
		// events keep their relative order.
		ev.at = s.hosts[ev.host].paused
		s.push(*ev)
		return
	}
	switch ev.kind {
	case evFunc:
		ev.fn()
	case evTimer:
		t := ev.timer
		hp := &s.hosts[t.h]
		if t.done || !hp.up || hp.inc != t.inc {
			return
		}
		t.done = true
		s.stats.Timers++
		t.f()
	case evMsg:
		hp := &s.hosts[ev.host]
		if !s.Reachable(ev.from, ev.host) || (ev.reliable && hp.inc != ev.inc) {
			s.stats.Unreachable++
			if ev.fail != nil {
				wait := s.cfg.FailAfter - s.Latency(ev.from, ev.host)
				s.failLater(ev.from, ev.fromInc, wait, ev.fail)
			}
			return
		}
		s.stats.Delivered++
		hp.proc.Receive(s.hosts[ev.from].addr, ev.msg)
	case evFail:
		hp := &s.hosts[ev.host]
		if hp.up && hp.inc == ev.inc {
			ev.fail(ErrUnreachable)
		}
	}
}

func (s *Sim) failLater(h HostID, inc uint32, wait env.Duration, f func(error)) {
	if wait < 0 {
		wait = 0
	}
	s.push(event{at: s.now.Add(wait), kind: evFail, host: h, inc: inc, fail: f})
}

func (s *Sim) send(from HostID, to env.Addr, msg []byte, reliable bool, failed func(error)) {
	hf := &s.hosts[from]
	if !hf.up {
		return // a crashed host's leftover callbacks cannot send
	}
	s.stats.Sent++
	s.stats.Bytes += uint64(len(msg))
	dst, ok := s.Host(to)
	if !ok {
		s.stats.Unreachable++
		if reliable && failed != nil {
			s.failLater(from, hf.inc, 0, failed)
		}
		return
	}
	if !reliable && s.cfg.Loss > 0 && s.rng.Float64() < s.cfg.Loss {
		s.stats.Lost++
		return
	}
	if reliable && !s.Reachable(from, dst) {
		s.stats.Unreachable++
		if failed != nil {
			s.failLater(from, hf.inc, s.cfg.FailAfter, failed)
		}
		return
	}
	delay := s.Latency(from, dst)
	if !reliable && s.cfg.Jitter > 0 {
		delay += env.Duration(s.rng.Int64N(int64(s.cfg.Jitter)))
	}
	ev := event{at: s.now.Add(delay), kind: evMsg, host: dst, from: from, msg: msg, reliable: reliable}
	if reliable {
		ev.inc = s.hosts[dst].inc
		ev.fromInc = hf.inc
		ev.fail = failed
	}
	s.push(ev)
}

func (s *Sim) push(ev event) {
	s.seq++
	ev.seq = s.seq
	s.queue.push(ev)
}

func linkKey(a, b HostID) uint64 {
	if a > b {
		a, b = b, a
	}
	return uint64(uint32(a))<<32 | uint64(uint32(b))
}

// FormatTime renders a virtual time as seconds with microsecond precision.
func FormatTime(t env.Time) string {
	return fmt.Sprintf("%d.%06ds", int64(t)/int64(env.Second), int64(t)%int64(env.Second))
}
