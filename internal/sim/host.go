package sim

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/epost-mail/epost/internal/env"
)

// addrPrefix starts every simulated address: "sim/17" is host 17.
const addrPrefix = "sim/"

// AddrOf returns the transport address of host h.
func AddrOf(h HostID) env.Addr { return env.Addr(addrPrefix + strconv.Itoa(int(h))) }

// Host parses a simulated address. Addresses that name no host (malformed,
// or from a hostile message) are reported as not found.
func (s *Sim) Host(a env.Addr) (HostID, bool) {
	if len(a) <= len(addrPrefix) || len(a) > len(addrPrefix)+10 || a[:len(addrPrefix)] != addrPrefix {
		return 0, false
	}
	n := 0
	for _, c := range []byte(a[len(addrPrefix):]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n >= len(s.hosts) {
		return 0, false
	}
	return HostID(n), true
}

// hostNet is host h's env.Transport.
type hostNet struct {
	s *Sim
	h HostID
}

func (n *hostNet) Send(to env.Addr, msg []byte) { n.s.send(n.h, to, msg, false, nil) }

func (n *hostNet) SendReliable(to env.Addr, msg []byte, failed func(error)) {
	n.s.send(n.h, to, msg, true, failed)
}

// hostClock is host h's env.Clock: virtual time since the host's boot,
// scaled by its rate error; wall time offset by its skew.
type hostClock struct {
	s *Sim
	h HostID
}

// simEpoch is the wall time at the start of every run, 2026-01-01 UTC, so
// runs do not depend on when they happen.
const simEpoch = 1767225600 * int64(env.Second)

func (c *hostClock) Now() env.Time {
	hp := &c.s.hosts[c.h]
	el := int64(c.s.now - hp.boot)
	if hp.ratePPM != 0 {
		el += drift(el, int64(hp.ratePPM))
	}
	return env.Time(el)
}

// drift is x*ppm/1e6 without overflow and without dropping the part of x
// below one second, so a clock's rate error shows over short intervals too.
func drift(x, ppm int64) int64 {
	return x/1_000_000*ppm + x%1_000_000*ppm/1_000_000
}

func (c *hostClock) Wall() int64 {
	return simEpoch + int64(c.s.now) + int64(c.s.hosts[c.h].wallSkew)
}

func (c *hostClock) AfterFunc(d env.Duration, f func()) env.Timer {
	hp := &c.s.hosts[c.h]
	if d < 0 {
		d = 0
	}
	if hp.ratePPM != 0 {
		// A fast clock reaches d local ticks sooner in true time.
		d -= env.Duration(drift(int64(d), int64(hp.ratePPM)))
	}
	t := &timer{h: c.h, inc: hp.inc, f: f}
	c.s.push(event{at: c.s.now.Add(d), kind: evTimer, host: c.h, timer: t})
	return t
}

// timer is a pending host callback.
type timer struct {
	h    HostID
	inc  uint32
	f    func()
	done bool
}

func (t *timer) Stop() bool {
	if t.done {
		return false
	}
	t.done = true
	return true
}

func (s *Sim) logger(h HostID) *slog.Logger {
	if s.cfg.LogHandler == nil {
		return env.Discard
	}
	return slog.New(&vtHandler{inner: s.cfg.LogHandler, s: s}).With("node", string(s.hosts[h].addr))
}

// vtHandler stamps records with virtual time instead of the wall clock, so
// logs of two runs with one seed are byte-identical.
type vtHandler struct {
	inner slog.Handler
	s     *Sim
}

func (v *vtHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return v.inner.Enabled(ctx, l)
}

func (v *vtHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Time = time.Time{}
	r.AddAttrs(slog.String("vt", FormatTime(v.s.now)))
	return v.inner.Handle(ctx, r)
}

func (v *vtHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &vtHandler{inner: v.inner.WithAttrs(as), s: v.s}
}

func (v *vtHandler) WithGroup(name string) slog.Handler {
	return &vtHandler{inner: v.inner.WithGroup(name), s: v.s}
}
