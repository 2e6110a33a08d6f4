package scenario

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/sim"
)

// newRing starts n nodes joining one every interval and runs until settle
// after the last join.
func newRing(t *testing.T, seed uint64, n int, interval, settle env.Duration) (*Ring, []sim.HostID) {
	t.Helper()
	cfg := sim.DefaultConfig(seed)
	cfg.InvariantEvery = 0
	r := NewRing(cfg, overlay.SimConfig())
	var hosts []sim.HostID
	for i := 0; i < n; i++ {
		r.S.At(env.Time(i)*env.Time(interval), func() { hosts = append(hosts, r.AddNode()) })
	}
	if err := r.S.RunUntil(env.Time(n) * env.Time(interval)); err != nil {
		t.Fatal(err)
	}
	if err := r.S.RunFor(settle); err != nil {
		t.Fatal(err)
	}
	return r, hosts
}

// lookups issues k random lookups, 10 ms apart, and waits for them.
func lookups(t *testing.T, r *Ring, k int) LookupStats {
	t.Helper()
	r.Lookups = LookupStats{}
	for i := 0; i < k; i++ {
		r.S.After(env.Duration(i)*10*env.Millisecond, func() { r.RandomLookup(true) })
	}
	if err := r.S.RunFor(env.Duration(k)*10*env.Millisecond + 2*LookupDeadline); err != nil {
		t.Fatal(err)
	}
	return r.Lookups
}

func requirePerfect(t *testing.T, what string, st LookupStats) {
	t.Helper()
	if st.Issued == 0 || st.Correct != st.Issued || st.DualRoots != 0 {
		t.Fatalf("%s: %d lookups, %d delivered, %d correct, %d dual roots", what, st.Issued, st.Delivered, st.Correct, st.DualRoots)
	}
}

func requireLeafSets(t *testing.T, what string, r *Ring) {
	t.Helper()
	if wrong, first := r.WrongLeafSets(); wrong != 0 {
		t.Fatalf("%s: %d wrong leaf sets, first: %s", what, wrong, first)
	}
}

func TestSequentialJoinsGiveCorrectRing(t *testing.T) {
	r, _ := newRing(t, 1, 150, 200*env.Millisecond, time1m)
	requireLeafSets(t, "after joins", r)
	st := lookups(t, r, 1000)
	requirePerfect(t, "lookups", st)
	if avg := float64(st.HopsSum) / float64(st.Delivered); avg > 2.5 {
		t.Fatalf("avg hops %.2f at 150 nodes", avg)
	}
}

const time1m = env.Minute

// A join storm: every node joins within one second, through random
// bootstraps that are themselves still joining.
func TestJoinStorm(t *testing.T) {
	r, _ := newRing(t, 2, 120, 8*env.Millisecond, time1m)
	if got := r.ActiveCount(); got != 120 {
		t.Fatalf("%d of 120 nodes active after the storm", got)
	}
	requireLeafSets(t, "after storm", r)
	requirePerfect(t, "lookups", lookups(t, r, 500))
}

// Mass failure: 20% of the nodes crash at once. Leaf sets must repair and
// lookups must be correct again.
func TestMassFailureOfTwentyPercent(t *testing.T) {
	r, hosts := newRing(t, 3, 200, 100*env.Millisecond, time1m)
	perm := r.S.Rand().Perm(len(hosts))
	for _, i := range perm[:len(hosts)/5] {
		r.Crash(hosts[i])
	}
	// Lookups issued right after the crash may be slow, never wrong.
	st := lookups(t, r, 300)
	if st.DualRoots != 0 || st.Correct != st.Delivered {
		t.Fatalf("during repair: %d delivered, %d correct, %d dual roots", st.Delivered, st.Correct, st.DualRoots)
	}
	if err := r.S.RunFor(3 * env.Minute); err != nil {
		t.Fatal(err)
	}
	requireLeafSets(t, "after repair", r)
	requirePerfect(t, "after repair", lookups(t, r, 500))
}

// Leaf-set repair: one node dies; its neighbours detect it by heartbeat,
// announce it, and every leaf set that held it is refilled.
func TestLeafSetRepairAfterOneFailure(t *testing.T) {
	r, hosts := newRing(t, 4, 60, 100*env.Millisecond, time1m)
	victim := hosts[17]
	r.Crash(victim)
	held := func() int {
		n := 0
		for _, h := range hosts {
			if o := r.Node(h); o != nil && o.Leaf().Contains(r.ids[victim].ID) {
				n++
			}
		}
		return n
	}
	if held() == 0 {
		t.Fatal("victim was in no leaf set")
	}
	cfg := overlay.SimConfig()
	// Detection by the left neighbour (silence, probes, a search for a
	// detour), then verification by every other holder.
	deadline := r.S.Now().Add(cfg.SuspectAfter + 2*cfg.HeartbeatPeriod + cfg.SearchTimeout + 30*env.Second)
	if done, err := r.S.RunWhile(func() bool { return held() > 0 }, deadline); err != nil || !done {
		t.Fatalf("victim still in %d leaf sets after %s", held(), sim.FormatTime(deadline))
	}
	if err := r.S.RunFor(10 * env.Second); err != nil {
		t.Fatal(err)
	}
	requireLeafSets(t, "after repair", r)
	st := r.TotalStats()
	if st.DeclaredDead == 0 {
		t.Fatal("nobody declared the victim dead")
	}
}

// A node that restarts with its old id (as a real node does) rejoins.
func TestRestartWithSameIDRejoins(t *testing.T) {
	r, hosts := newRing(t, 5, 50, 100*env.Millisecond, time1m)
	h := hosts[7]
	r.Crash(h)
	r.S.RunFor(5 * env.Second)
	r.S.Restart(h)
	if err := r.S.RunFor(2 * env.Minute); err != nil {
		t.Fatal(err)
	}
	if o := r.Node(h); o == nil || !o.Active() {
		t.Fatal("restarted node did not become active")
	}
	requireLeafSets(t, "after rejoin", r)
	requirePerfect(t, "after rejoin", lookups(t, r, 300))
}

// A node that restarts at its old address a few seconds after a crash,
// while neighbours reach it only through helpers (they found the direct
// link dead, and helpers that had just heard from it vouched for it),
// rejoins, and the links become direct again: nothing is broken. Relayed
// messages from peers it never heard directly are taken on the helper's
// word, and indirect links are tried directly now and then. A soak run
// with real processes once left such a node joining forever: it dropped
// its neighbour's relayed join reply as unauthenticated, and the neighbour
// never tried the direct link again.
func TestRestartBehindIndirectLinksRejoins(t *testing.T) {
	cfg := sim.DefaultConfig(11)
	cfg.InvariantEvery = 0
	r := NewRing(cfg, overlay.SimConfig())
	r.AuthLikeTransport = true
	hosts, err := r.Build(12, 100*env.Millisecond, time1m)
	if err != nil {
		t.Fatal(err)
	}
	h := hosts[5]
	self := r.Node(h).Self()
	// Busy until its crash, as a mail node is: everyone heard from it
	// within the last moments, so helpers vouch for it.
	for _, o := range hosts {
		if o != h {
			r.Node(h).SendDirect(r.Node(o).Self(), []byte("busy"))
		}
	}
	r.S.RunFor(50 * env.Millisecond)
	r.Crash(h)
	// Traffic towards the dead node's keys makes its neighbours probe it
	// at once, while helpers still count it as fresh.
	for i := 0; i < 20; i++ {
		r.S.After(env.Duration(i)*100*env.Millisecond, func() { r.Lookup(hosts[(5+1+i%10)%12], self.ID.ID, false) })
	}
	r.S.RunFor(4 * env.Second)
	if r.IndirectLinks() == 0 {
		t.Fatal("no neighbour took an indirect link to the crashed node: the test no longer sets up its case")
	}
	r.S.Restart(h)
	if err := r.S.RunFor(2 * env.Minute); err != nil {
		t.Fatal(err)
	}
	if o := r.Node(h); o == nil || !o.Active() {
		t.Fatal("restarted node did not become active")
	}
	if n := r.IndirectLinks(); n != 0 {
		t.Fatalf("%d links still relayed 2 minutes after the node came back; none is broken", n)
	}
	requireLeafSets(t, "after rejoin", r)
	requirePerfect(t, "after rejoin", lookups(t, r, 300))
}

func TestChurnSmoke(t *testing.T) {
	res, err := RunChurn(ChurnConfig{Nodes: 150, Seed: 7, SessionMinutes: 30, DowntimeMinutes: 10, WarmupMinutes: 5, Minutes: 10, LookupRate: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	if res.Get("dual_root_events").(int) != 0 {
		t.Fatalf("dual roots under churn: %v", res.Get("dual_root_events"))
	}
	if c := res.Get("correct_fraction").(float64); c < 0.999 {
		t.Fatalf("correct fraction %v under churn", c)
	}
}

func TestSameSeedSameResult(t *testing.T) {
	run := func() *Result {
		res, err := RunRouting(RoutingConfig{Nodes: 80, Seed: 9, Lookups: 300, JoinInterval: 50 * env.Millisecond, SettleMinutes: 1})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b := run(), run()
	for _, k := range []string{"avg_hops", "max_hops", "correct_fraction", "avg_stretch", "events", "rerouted_hops"} {
		if a.Get(k) != b.Get(k) {
			t.Fatalf("%s differs between runs with one seed: %v vs %v", k, a.Get(k), b.Get(k))
		}
	}
}

// crashOnForward is an application that crashes its own node the first
// time it is asked to forward a lookup: the hop was acknowledged, and the
// message dies with the node.
type crashOnForward struct {
	overlay.App
	r     *Ring
	h     sim.HostID
	armed *bool
}

func (c crashOnForward) Forward(m *overlay.Message, next overlay.NodeHandle) bool {
	if *c.armed && len(m.Payload) == 8 && m.Src.Addr != string(c.r.S.Addr(c.h)) {
		*c.armed = false
		c.r.Crash(c.h)
		return false
	}
	return c.App.Forward(m, next)
}

func TestEndToEndConfirmationSurvivesACrashAfterTheHopAck(t *testing.T) {
	for _, e2e := range []bool{true, false} {
		cfg := sim.DefaultConfig(21)
		cfg.InvariantEvery = 0
		ocfg := overlay.SimConfig()
		if !e2e {
			ocfg.EndToEndTimeout = 0
		}
		r := NewRing(cfg, ocfg)
		armed := false
		r.MakeApp = func(h sim.HostID, _ env.Env, upper overlay.App) (overlay.App, func(*overlay.Overlay)) {
			return crashOnForward{App: upper, r: r, h: h, armed: &armed}, nil
		}
		if _, err := r.Build(60, 100*env.Millisecond, time1m); err != nil {
			t.Fatal(err)
		}
		// Lookups until one passes through an intermediate hop, which then
		// crashes holding it.
		armed = true
		for i := 0; i < 50 && armed; i++ {
			r.RandomLookup(true)
			if err := r.S.RunFor(time1m / 6); err != nil {
				t.Fatal(err)
			}
		}
		if armed {
			t.Fatal("no lookup took an intermediate hop")
		}
		if err := r.S.RunFor(2 * LookupDeadline); err != nil {
			t.Fatal(err)
		}
		lost := r.Lookups.Issued - r.Lookups.Delivered
		if e2e && (lost != 0 || r.Lookups.Correct != r.Lookups.Issued) {
			t.Fatalf("with end-to-end confirmation: %+v", r.Lookups)
		}
		if !e2e && lost != 1 {
			t.Fatalf("without it the crashed hop should lose exactly one lookup: %+v", r.Lookups)
		}
	}
}

// TestSimulatedLogsNameTheRingID checks that a simulated node's log
// records carry its ring id, as a real node's do, next to the host.
func TestSimulatedLogsNameTheRingID(t *testing.T) {
	var buf bytes.Buffer
	cfg := sim.DefaultConfig(3)
	cfg.InvariantEvery = 0
	cfg.LogHandler = slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
	r := NewRing(cfg, overlay.SimConfig())
	for i := 0; i < 4; i++ {
		r.S.At(env.Time(i)*env.Time(100*env.Millisecond), func() { r.AddNode() })
	}
	if err := r.S.RunFor(10 * env.Second); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, h := range r.order {
		want["id="+r.ids[h].Short()] = false
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	for _, line := range lines {
		if !strings.Contains(line, "node=") {
			t.Fatalf("record without its host: %q", line)
		}
		for k := range want {
			if strings.Contains(line, k) {
				want[k] = true
			}
		}
	}
	for k, seen := range want {
		if !seen {
			t.Errorf("no record carries %s in %d lines", k, len(lines))
		}
	}
}
