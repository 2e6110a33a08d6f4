package sim_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/scenario"
	"github.com/epost-mail/epost/internal/sim"
)

// world boots n pingers (the engine's calibration protocol).
func world(cfg sim.Config, n int, reliable bool) *sim.Sim {
	s := sim.New(cfg)
	var peers []env.Addr
	for i := 0; i < n; i++ {
		peers = append(peers, sim.AddrOf(sim.HostID(i)))
	}
	for i := 0; i < n; i++ {
		s.Add(scenario.StartPinger(peers, env.Second, reliable, nil))
	}
	return s
}

// run drives a busy world through every kind of fault and returns its
// trace hash, statistics and the full debug log.
func run(seed uint64) (uint64, sim.Stats, []byte) {
	var log bytes.Buffer
	cfg := sim.DefaultConfig(seed)
	cfg.Loss = 0.05
	cfg.Jitter = 10 * env.Millisecond
	cfg.Trace = true
	cfg.LogHandler = slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})
	s := world(cfg, 40, false)
	for i := 0; i < 40; i += 4 {
		s.SetClock(sim.HostID(i), env.Duration(i)*env.Hour, int32(i*10))
	}
	hosts := make([]sim.HostID, 40)
	for i := range hosts {
		hosts[i] = sim.HostID(i)
	}
	s.StartChurn(sim.Churn{MeanSession: 20 * env.Second, MeanDowntime: 5 * env.Second}, hosts[20:])
	s.After(10*env.Second, func() { s.Partition(hosts[:10]) })
	s.After(20*env.Second, func() { s.Heal() })
	s.BreakLink(1, 2)
	s.BreakLink(3, 7)
	if err := s.RunFor(60 * env.Second); err != nil {
		panic(err)
	}
	return s.TraceHash(), s.Stats(), log.Bytes()
}

func TestSameSeedIsByteIdentical(t *testing.T) {
	h1, st1, log1 := run(42)
	h2, st2, log2 := run(42)
	if h1 != h2 || st1 != st2 {
		t.Fatalf("same seed diverged: trace %x vs %x, stats %+v vs %+v", h1, h2, st1, st2)
	}
	if !bytes.Equal(log1, log2) {
		t.Fatalf("same seed gave different logs (%d vs %d bytes)", len(log1), len(log2))
	}
	if st1.Crashes == 0 || st1.Lost == 0 || st1.Unreachable == 0 || len(log1) == 0 {
		t.Fatalf("the run did not exercise the faults it claims to: %+v, %d log bytes", st1, len(log1))
	}
	h3, _, log3 := run(43)
	if h3 == h1 || bytes.Equal(log1, log3) {
		t.Fatal("a different seed gave the same run")
	}
}

func TestEventsRunInTimeThenSequenceOrder(t *testing.T) {
	s := sim.New(sim.DefaultConfig(1))
	var got []string
	s.At(30, func() { got = append(got, "c") })
	s.At(10, func() { got = append(got, "a1") })
	s.At(10, func() { got = append(got, "a2") })
	s.At(20, func() {
		got = append(got, "b")
		s.At(20, func() { got = append(got, "b-same-time") })
		s.At(5, func() { got = append(got, "past-clamped-to-now") })
	})
	if err := s.RunUntil(100); err != nil {
		t.Fatal(err)
	}
	want := "[a1 a2 b b-same-time past-clamped-to-now c]"
	if fmt.Sprint(got) != want {
		t.Fatalf("order %v, want %s", got, want)
	}
	if s.Now() != 100 {
		t.Fatalf("clock after RunUntil(100) = %d", s.Now())
	}
}

// echo records what it receives.
type echo struct {
	e   env.Env
	got []string
}

func (x *echo) Receive(from env.Addr, msg []byte) {
	x.got = append(x.got, string(from)+":"+string(msg))
}

func echoes(s *sim.Sim, n int) []*echo {
	var xs []*echo
	for i := 0; i < n; i++ {
		i := i
		xs = append(xs, nil)
		s.Add(func(e env.Env) sim.Process {
			xs[i] = &echo{e: e}
			return xs[i]
		})
	}
	return xs
}

func TestLatencyIsPerPairAndBounded(t *testing.T) {
	cfg := sim.DefaultConfig(7)
	s := sim.New(cfg)
	xs := echoes(s, 50)
	for a := 0; a < 50; a++ {
		for b := 0; b < 50; b++ {
			l := s.Latency(sim.HostID(a), sim.HostID(b))
			if l < cfg.MinLatency || l > cfg.MaxLatency {
				t.Fatalf("latency %d->%d = %d outside [%d, %d]", a, b, l, cfg.MinLatency, cfg.MaxLatency)
			}
			if l != s.Latency(sim.HostID(b), sim.HostID(a)) {
				t.Fatal("latency not symmetric")
			}
		}
	}
	xs[0].e.Net.Send(sim.AddrOf(1), []byte("hi"))
	want := s.Now().Add(s.Latency(0, 1))
	s.RunUntil(want - 1)
	if len(xs[1].got) != 0 {
		t.Fatal("message arrived before its latency")
	}
	s.RunUntil(want)
	if len(xs[1].got) != 1 || xs[1].got[0] != "sim/0:hi" {
		t.Fatalf("got %v", xs[1].got)
	}
}

func TestPartitionAndNonTransitiveLinks(t *testing.T) {
	s := sim.New(sim.DefaultConfig(3))
	xs := echoes(s, 3)
	s.BreakLink(0, 2)
	// A-C down while A-B and B-C work.
	if s.Reachable(0, 2) || s.Reachable(2, 0) || !s.Reachable(0, 1) || !s.Reachable(1, 2) {
		t.Fatal("broken link is not non-transitive")
	}
	var failed []error
	xs[0].e.Net.SendReliable(sim.AddrOf(2), []byte("x"), func(err error) { failed = append(failed, err) })
	xs[0].e.Net.Send(sim.AddrOf(1), []byte("y"))
	xs[1].e.Net.Send(sim.AddrOf(2), []byte("z"))
	s.RunFor(5 * env.Second)
	if len(xs[2].got) != 1 || xs[2].got[0] != "sim/1:z" || len(xs[1].got) != 1 {
		t.Fatalf("deliveries wrong: b=%v c=%v", xs[1].got, xs[2].got)
	}
	if len(failed) != 1 || !errors.Is(failed[0], sim.ErrUnreachable) {
		t.Fatalf("reliable send over a broken link reported %v", failed)
	}
	s.RepairLink(0, 2)
	s.Partition([]sim.HostID{0})
	if s.Reachable(0, 1) || !s.Reachable(1, 2) {
		t.Fatal("partition wrong")
	}
	s.Heal()
	if !s.Reachable(0, 2) {
		t.Fatal("heal did not restore links")
	}
}

func TestCrashDropsTimersAndMessagesAndRestartIsFresh(t *testing.T) {
	s := sim.New(sim.DefaultConfig(5))
	boots := 0
	fired := 0
	var envs []env.Env
	s.Add(func(e env.Env) sim.Process {
		boots++
		envs = append(envs, e)
		e.Clock.AfterFunc(env.Second, func() { fired++ })
		return &echo{e: e}
	})
	other := echoes(s, 1)[0]
	other.e.Net.Send(sim.AddrOf(0), []byte("lost"))
	var fails int
	other.e.Net.SendReliable(sim.AddrOf(0), []byte("lost too"), func(error) { fails++ })
	s.Crash(0)
	s.RunFor(3 * env.Second)
	if fired != 0 || fails != 1 || s.Process(0) != nil {
		t.Fatalf("after crash: fired=%d fails=%d", fired, fails)
	}
	s.RunFor(5 * env.Second)
	s.Restart(0)
	if boots != 2 || envs[1].Clock.Now() != 0 {
		t.Fatalf("restart: boots=%d clock=%d", boots, envs[1].Clock.Now())
	}
	s.RunFor(2 * env.Second)
	if fired != 1 {
		t.Fatalf("new incarnation's timer fired %d times", fired)
	}
	if envs[0].Rand.Uint64() == envs[1].Rand.Uint64() {
		t.Fatal("incarnations share a random stream")
	}
}

func TestReliableSendToRestartedHostFails(t *testing.T) {
	s := sim.New(sim.DefaultConfig(9))
	xs := echoes(s, 2)
	var fails int
	xs[0].e.Net.SendReliable(sim.AddrOf(1), []byte("m"), func(error) { fails++ })
	s.Crash(1)
	s.Restart(1) // the connection the message travelled on is gone
	s.RunFor(5 * env.Second)
	if fails != 1 {
		t.Fatalf("fails = %d", fails)
	}
}

func TestTimerStopAndClockSkew(t *testing.T) {
	s := sim.New(sim.DefaultConfig(11))
	xs := echoes(s, 2)
	ran := false
	tm := xs[0].e.Clock.AfterFunc(env.Second, func() { ran = true })
	if !tm.Stop() || tm.Stop() {
		t.Fatal("Stop reports wrong")
	}
	s.SetClock(1, 2*365*24*env.Hour, 100) // two years off, 100 ppm fast
	var at env.Time
	xs[1].e.Clock.AfterFunc(10*env.Second, func() { at = s.Now() })
	s.RunFor(20 * env.Second)
	if ran {
		t.Fatal("stopped timer ran")
	}
	if at >= env.Time(10*env.Second) || at < env.Time(10*env.Second-2*env.Millisecond) {
		t.Fatalf("fast clock's 10s timer fired at true %s", sim.FormatTime(at))
	}
	if xs[1].e.Clock.Now() <= xs[0].e.Clock.Now() {
		t.Fatal("fast clock not ahead")
	}
	// The rate shows below one second too: a 500 ms timer on a clock
	// 100 ppm fast fires 50 µs early in true time.
	start := s.Now()
	var short env.Time
	xs[1].e.Clock.AfterFunc(500*env.Millisecond, func() { short = s.Now() })
	s.RunFor(env.Second)
	if got := short.Sub(start); got != 500*env.Millisecond-50*env.Microsecond {
		t.Fatalf("fast clock's 500 ms timer fired after true %d µs", got)
	}
	if d := xs[1].e.Clock.Wall() - xs[0].e.Clock.Wall(); d != int64(2*365*24*env.Hour) {
		t.Fatalf("wall skew %d", d)
	}
}

func TestInvariantViolationStopsRunWithSeed(t *testing.T) {
	s := sim.New(sim.DefaultConfig(13))
	n := 0
	for i := 0; i < 10; i++ {
		s.At(env.Time(i), func() { n++ })
	}
	s.AddInvariant("fewer than 3", func() error {
		if n >= 3 {
			return errors.New("n reached 3")
		}
		return nil
	})
	err := s.RunFor(env.Second)
	if err == nil || n != 3 {
		t.Fatalf("err=%v n=%d", err, n)
	}
	if want := "seed 13"; !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Fatalf("error %q does not name the seed", err)
	}
}

func TestChurnMeansMatch(t *testing.T) {
	s := sim.New(sim.DefaultConfig(17))
	echoes(s, 200)
	hosts := make([]sim.HostID, 200)
	for i := range hosts {
		hosts[i] = sim.HostID(i)
	}
	var up, down env.Duration
	last := map[sim.HostID]env.Time{}
	for _, h := range hosts {
		last[h] = 0
	}
	c := sim.Churn{
		MeanSession:  30 * env.Minute,
		MeanDowntime: 10 * env.Minute,
		OnCrash:      func(h sim.HostID) { up += s.Now().Sub(last[h]); last[h] = s.Now() },
		OnRestart:    func(h sim.HostID) { down += s.Now().Sub(last[h]); last[h] = s.Now() },
	}
	s.StartChurn(c, hosts)
	s.RunFor(48 * env.Hour)
	st := s.Stats()
	meanUp := up.Seconds() / float64(st.Crashes)
	meanDown := down.Seconds() / float64(st.Restarts-200)
	if meanUp < 27*60 || meanUp > 33*60 || meanDown < 9*60 || meanDown > 11*60 {
		t.Fatalf("mean session %.0fs (want ~1800), downtime %.0fs (want ~600) over %d crashes", meanUp, meanDown, st.Crashes)
	}
}

func TestHostAddressParsing(t *testing.T) {
	s := sim.New(sim.DefaultConfig(1))
	echoes(s, 12)
	for _, c := range []struct {
		a  env.Addr
		ok bool
		h  sim.HostID
	}{
		{"sim/0", true, 0}, {"sim/11", true, 11}, {"sim/12", false, 0}, {"sim/", false, 0},
		{"sim/-1", false, 0}, {"sim/1x", false, 0}, {"bob/1", false, 0}, {"sim/99999999999999", false, 0}, {"", false, 0},
	} {
		h, ok := s.Host(c.a)
		if ok != c.ok || (ok && h != c.h) {
			t.Errorf("Host(%q) = %d, %v", c.a, h, ok)
		}
	}
}

// BenchmarkPing measures engine throughput (events per second of wall time)
// and memory per simulated host with a trivial protocol.
func BenchmarkPing(b *testing.B) {
	for _, n := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			var events uint64
			var perNode float64
			var running time.Duration
			for i := 0; i < b.N; i++ {
				runtime.GC()
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				cfg := sim.DefaultConfig(uint64(i))
				cfg.InvariantEvery = 0
				s := world(cfg, n, false)
				t0 := time.Now()
				s.RunFor(10 * env.Second)
				running += time.Since(t0)
				runtime.GC()
				runtime.ReadMemStats(&m1)
				perNode = float64(m1.HeapAlloc-m0.HeapAlloc) / float64(n)
				events += s.Stats().Events
				runtime.KeepAlive(s)
			}
			b.ReportMetric(float64(events)/running.Seconds(), "events/s")
			b.ReportMetric(perNode, "heap-bytes/node")
		})
	}
}

func TestPauseDefersEverythingInOrderAndSuspendStopsTheMonotonicClock(t *testing.T) {
	s := sim.New(sim.DefaultConfig(21))
	xs := echoes(s, 2)
	var order []string
	xs[0].e.Clock.AfterFunc(env.Second, func() { order = append(order, "timer") })
	s.Pause(0, 5*env.Second)
	xs[1].e.Net.Send(sim.AddrOf(0), []byte("during"))
	s.RunFor(4 * env.Second)
	if len(order) != 0 || len(xs[0].got) != 0 {
		t.Fatal("a paused host ran something")
	}
	s.RunFor(2 * env.Second)
	if fmt.Sprint(order) != "[timer]" || len(xs[0].got) != 1 {
		t.Fatalf("after the pause: order %v, got %v", order, xs[0].got)
	}
	mono0, wall0 := xs[1].e.Clock.Now(), xs[1].e.Clock.Wall()
	s.Suspend(1, time10s)
	s.RunFor(time10s + env.Second)
	if dm, dw := xs[1].e.Clock.Now().Sub(mono0), xs[1].e.Clock.Wall()-wall0; dm != env.Second || dw != int64(time10s+env.Second) {
		t.Fatalf("suspend: monotonic +%d, wall +%d", dm, dw)
	}
}

const time10s = 10 * env.Second
