// Package env defines the small interfaces through which a protocol core
// sees the world: a clock in virtual ticks with timers, a seeded random
// source, a transport, and a logger. The discrete-event simulator
// (internal/sim) and the real runtime (internal/node) each implement them,
// so the same core code runs in both.
//
// Invariants every implementation keeps, and every core may rely on:
//   - Callbacks (timer functions, send-failure reports, message delivery)
//     run on the node's single event loop, never concurrently with each
//     other or with a call into the core. Cores therefore hold no locks.
//   - Time is a count of Ticks on the node's own monotonic clock, which
//     never goes backwards. Wall time is for display only; no protocol
//     decision may depend on it (it can be years off).
//   - Randomness comes only from Rand; in the simulator it is seeded per
//     node, so a run is reproduced by its seed.
package env

import (
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	mrand "math/rand/v2"
)

// Duration is a span of virtual time in ticks. One tick is a microsecond.
type Duration int64

// Time is a reading of a node's monotonic clock, in ticks since the node's
// clock started. Readings from different nodes are not comparable.
type Time int64

// Tick lengths.
const (
	Microsecond Duration = 1
	Millisecond          = 1000 * Microsecond
	Second               = 1000 * Millisecond
	Minute               = 60 * Second
	Hour                 = 60 * Minute
)

// Seconds returns d in seconds.
func (d Duration) Seconds() float64 { return float64(d) / float64(Second) }

// Add returns t + d.
func (t Time) Add(d Duration) Time { return t + Time(d) }

// Sub returns t - u.
func (t Time) Sub(u Time) Duration { return Duration(t - u) }

// Timer is a pending callback that can be cancelled.
type Timer interface {
	// Stop cancels the timer; it reports whether the callback had not yet
	// run (and now never will).
	Stop() bool
}

// Clock gives a core the time and timers.
type Clock interface {
	// Now is the node's monotonic clock.
	Now() Time
	// Wall is the node's wall clock in microseconds since the Unix epoch.
	// It may be arbitrarily wrong and may jump; use it for display and to
	// notice that the machine slept, never for protocol decisions.
	Wall() int64
	// AfterFunc runs f on the node's event loop once d has passed.
	AfterFunc(d Duration, f func()) Timer
}

// Rand is a random source. Cores use it for every random choice, including
// key material, so a simulated run is reproduced exactly by its seed.
type Rand interface {
	Uint64() uint64
	// IntN returns a value in [0, n); n must be > 0.
	IntN(n int) int
	// Float64 returns a value in [0, 1).
	Float64() float64
	// Read fills p with random bytes and never fails.
	Read(p []byte) (int, error)
}

// Addr names a node at the transport level: an opaque string the
// transport understands (a simulator index, a libp2p multiaddr). Overlay
// handles pair it with the node's ring id.
type Addr string

// Transport sends messages to other nodes. Messages are encoded bytes
// (see internal/wire); the receiver's runtime hands them to the core.
type Transport interface {
	// Send delivers msg to node to at most once, with no guarantee: it may
	// be lost, delayed or reordered. Cores that need delivery acknowledge
	// at their own level.
	Send(to Addr, msg []byte)
	// SendReliable delivers msg in order with other reliable messages to
	// the same node, unless the node cannot be reached; then failed (if
	// not nil) is called on the event loop with the reason. Success is not
	// reported: the receiver answers at the protocol level.
	SendReliable(to Addr, msg []byte, failed func(error))
}

// Env bundles what a core receives at construction.
type Env struct {
	// Self is this node's own transport address.
	Self  Addr
	Clock Clock
	Rand  Rand
	Net   Transport
	// Log names the node on every record: the real runtime by its ring id
	// ("node"); the simulator by its host address ("node", the engine
	// knows no protocol) and the virtual time, to which a scenario adds the
	// ring id ("id").
	Log *slog.Logger
}

// seeded is a Rand over a PCG generator.
type seeded struct{ r *mrand.Rand }

// NewRand returns a deterministic Rand for the given seed.
func NewRand(seed1, seed2 uint64) Rand {
	return seeded{mrand.New(mrand.NewPCG(seed1, seed2))}
}

func (s seeded) Uint64() uint64   { return s.r.Uint64() }
func (s seeded) IntN(n int) int   { return s.r.IntN(n) }
func (s seeded) Float64() float64 { return s.r.Float64() }
func (s seeded) Read(p []byte) (int, error) {
	var buf [8]byte
	for i := 0; i < len(p); i += 8 {
		binary.LittleEndian.PutUint64(buf[:], s.r.Uint64())
		copy(p[i:], buf[:])
	}
	return len(p), nil
}

// cryptoRand is a Rand backed by the operating system's CSPRNG, for the
// real runtime.
type cryptoRand struct{}

// CryptoRand returns a Rand backed by crypto/rand.
func CryptoRand() Rand { return cryptoRand{} }

func (cryptoRand) Uint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return binary.LittleEndian.Uint64(b[:])
}

func (c cryptoRand) IntN(n int) int {
	if n <= 0 {
		panic("env: IntN with n <= 0")
	}
	// Rejection sampling to avoid modulo bias.
	max := ^uint64(0) - ^uint64(0)%uint64(n)
	for {
		v := c.Uint64()
		if v < max {
			return int(v % uint64(n))
		}
	}
}

func (c cryptoRand) Float64() float64 { return float64(c.Uint64()>>11) / (1 << 53) }

func (cryptoRand) Read(p []byte) (int, error) {
	_, _ = rand.Read(p)
	return len(p), nil
}

// Discard is a logger that drops everything; simulations of thousands of
// nodes use it unless asked to trace.
var Discard = slog.New(slog.DiscardHandler)
