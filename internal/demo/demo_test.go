package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/node"
)

// waitFor polls cond until it holds or d passes. The tests synchronise
// on conditions, never on sleeps.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settleGoroutines waits until no more goroutines run than before: what
// a closed community must leave behind.
func settleGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines run after Close, %d before Start:\n%s", runtime.NumGoroutine(), before, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// client fetches without keeping connections (and their goroutines)
// alive between requests.
var client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get(t *testing.T, url string) (string, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b), resp.Header.Get("Content-Type")
}

// TestCommunity starts five real nodes on loopback, waits until the ring
// has settled, reads the status page as a browser and as a program would,
// and closes the community, which must leave nothing running.
func TestCommunity(t *testing.T) {
	const n = 5
	before := runtime.NumGoroutine()
	cfg := DefaultConfig()
	cfg.Nodes = n
	var joined []int
	cfg.OnNode = func(i int, nd *node.Node) {
		joined = append(joined, i) // Start's goroutine: this one
		if !nd.Active() {
			t.Errorf("node %d reported before it was active", i)
		}
	}
	c, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if !slices.Equal(joined, []int{0, 1, 2, 3, 4}) {
		t.Fatalf("OnNode saw %v", joined)
	}
	if err := c.WaitReady(t.Context(), 60*time.Second); err != nil {
		t.Fatal(err)
	}

	// /status.json: every node active, holding every other node on each
	// side (5 nodes < L = 24).
	body, ctype := get(t, c.StatusURL()+"status.json")
	if ctype != "application/json" {
		t.Errorf("status.json served as %q", ctype)
	}
	var rep node.StatusReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("status.json: %v\n%s", err, body)
	}
	if len(rep.Nodes) != n {
		t.Fatalf("status.json lists %d nodes, want %d", len(rep.Nodes), n)
	}
	var ids []string
	for _, nd := range c.Nodes() {
		ids = append(ids, nd.ID().String())
	}
	slices.Sort(ids)
	for i, s := range rep.Nodes {
		if s.ID != ids[i] {
			t.Fatalf("status.json node %d is %s, want %s (sorted by id)", i, s.ID, ids[i])
		}
		others := slices.DeleteFunc(slices.Clone(ids), func(x string) bool { return x == s.ID })
		for side, got := range map[string][]string{"left": s.Left, "right": s.Right} {
			if g := slices.Sorted(slices.Values(got)); !slices.Equal(g, others) {
				t.Errorf("node %s: %s side %v, want every other node %v", s.Short, side, g, others)
			}
		}
		if !s.Running || !s.Active || s.LeafSet != n-1 || s.LeafSetSize != cfg.Overlay.LeafSetSize {
			t.Errorf("node %s: running %v, active %v, leaf set %d of %d", s.Short, s.Running, s.Active, s.LeafSet, s.LeafSetSize)
		}
		// Each other node fits one slot; two sharing a prefix may compete
		// for the same one.
		if s.TableEntries == 0 || s.TableEntries > n-1 || len(s.TableRows) == 0 || len(s.Table) != s.TableEntries {
			t.Errorf("node %s: routing table %d entries, rows %v, list %v", s.Short, s.TableEntries, s.TableRows, s.Table)
		}
		if s.Addr == "" || !strings.HasPrefix(s.Addr, "/ip4/127.0.0.1/tcp/") {
			t.Errorf("node %s: address %q, want loopback tcp", s.Short, s.Addr)
		}
	}

	// /: the ring drawn with a node and a table row per node, and a line
	// per leaf-set membership.
	page, ctype := get(t, c.StatusURL())
	if !strings.HasPrefix(ctype, "text/html") {
		t.Errorf("page served as %q", ctype)
	}
	for what, want := range map[string]int{
		"<svg":               1,
		`<g class="node"`:    n,
		`<line class="leaf"`: n * (n - 1),
		"<tr data-id=":       n,
		"leaf sets complete": 1,
	} {
		if got := strings.Count(page, what); got != want {
			t.Errorf("page has %d of %q, want %d", got, what, want)
		}
	}
	for _, s := range rep.Nodes {
		if !strings.Contains(page, s.Short) || !strings.Contains(page, s.Addr) {
			t.Errorf("page lacks node %s or its address", s.Short)
		}
	}
	if resp, err := client.Get(c.StatusURL() + "nothing-here"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown path: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	var view strings.Builder
	if err := WriteView(&view, c.Report()); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(view.String()), "\n"); len(lines) != n+2 || !strings.Contains(lines[0], "5 active, ready") {
		t.Errorf("terminal view:\n%s", view.String())
	}
	for _, s := range rep.Nodes {
		if !strings.Contains(view.String(), fmt.Sprintf("%s  yes      4/4", s.Short)) {
			t.Errorf("terminal view lacks %s as active with 4 of 4 leaf-set members:\n%s", s.Short, view.String())
		}
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, nd := range c.Nodes() {
		if err := nd.Do(func() {}); !errors.Is(err, node.ErrStopped) {
			t.Errorf("node %s still runs its loop: %v", nd.ID().Short(), err)
		}
		if s := nd.Status(); s.Running || s.Active {
			t.Errorf("closed node %s reports running %v, active %v", s.Short, s.Running, s.Active)
		}
	}
	if ok, _ := c.Ready(); ok {
		t.Error("a closed community reports ready")
	}
	if resp, err := client.Get(c.StatusURL()); err == nil {
		resp.Body.Close()
		t.Error("the status page still answers after Close")
	}
	client.CloseIdleConnections()
	settleGoroutines(t, before)
}

// TestStartStops: a Start whose context ends, or whose config is bad,
// leaves nothing running.
func TestStartStops(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(t.Context())
	cfg := DefaultConfig()
	cfg.Nodes = 3
	cfg.OnNode = func(i int, _ *node.Node) {
		if i == 0 {
			cancel() // stop while node 1 joins
		}
	}
	if c, err := Start(ctx, cfg); !errors.Is(err, context.Canceled) {
		if c != nil {
			_ = c.Close()
		}
		t.Fatalf("Start with its context cancelled: %v", err)
	}
	settleGoroutines(t, before)

	for _, bad := range []func(*Config){
		func(c *Config) { c.Nodes = 0 },
		func(c *Config) { c.Nodes = MaxNodes + 1 },
		func(c *Config) { c.Overlay.LeafSetSize = 3 },
	} {
		cfg := DefaultConfig()
		bad(&cfg)
		if _, err := Start(t.Context(), cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("Start(%+v): %v, want ErrConfig", cfg.Nodes, err)
		}
	}
	cfg = DefaultConfig()
	cfg.Nodes = 1
	cfg.HTTP = "no-such-host-or-port"
	if c, err := Start(t.Context(), cfg); err == nil {
		_ = c.Close()
		t.Fatal("Start with a bad status page address succeeded")
	}
	settleGoroutines(t, before)
}

// TestExpectedLeafSet: every other member in a small ring; the L/2
// nearest on each side, across 0, in a large one.
func TestExpectedLeafSet(t *testing.T) {
	var ring []id.ID
	for i := range uint64(40) {
		ring = append(ring, id.FromUint64(i<<56, 0))
	}
	if got := ExpectedLeafSet(ring[3], ring[:5], 24); !slices.Equal(got, []id.ID{ring[0], ring[1], ring[2], ring[4]}) {
		t.Errorf("small ring: %v", got)
	}
	got := ExpectedLeafSet(ring[1], ring, 4)
	want := []id.ID{ring[0], ring[2], ring[3], ring[39]}
	if !slices.Equal(got, want) {
		t.Errorf("large ring: %v, want %v", got, want)
	}
	if got := ExpectedLeafSet(ring[1], append(slices.Clone(ring[:3]), ring[1], ring[0]), 24); len(got) != 2 {
		t.Errorf("duplicates and self counted: %v", got)
	}
}

// TestReadyRejects: a report with an inactive node, a stopped node or a
// leaf set short of a member is not ready, and says which node lags.
func TestReadyRejects(t *testing.T) {
	a, b := id.FromUint64(1<<60, 0).String(), id.FromUint64(9<<60, 0).String()
	ok := func() node.StatusReport {
		return node.StatusReport{Nodes: []node.Status{
			{ID: a, Short: a[:8], Running: true, Active: true, LeafSetSize: 24, Left: []string{b}, Right: []string{b}},
			{ID: b, Short: b[:8], Running: true, Active: true, LeafSetSize: 24, Left: []string{a}, Right: []string{a}},
		}}
	}
	if r, why := ready(ok()); !r {
		t.Fatalf("settled pair not ready: %s", why)
	}
	for name, spoil := range map[string]func(*node.StatusReport){
		"inactive": func(r *node.StatusReport) { r.Nodes[1].Active = false },
		"stopped":  func(r *node.StatusReport) { r.Nodes[0].Running = false },
		"short":    func(r *node.StatusReport) { r.Nodes[0].Left, r.Nodes[0].Right = nil, nil },
		"bad id":   func(r *node.StatusReport) { r.Nodes[1].Left = []string{"zz"} },
		"empty":    func(r *node.StatusReport) { r.Nodes = nil },
	} {
		r := ok()
		spoil(&r)
		if got, why := ready(r); got || why == "" {
			t.Errorf("%s: ready %v (%q)", name, got, why)
		}
	}
}

// TestWriteViewOneNodeOfMany checks the view of one node's own status
// report (`epost status`): its leaf-set members are not in the report, so
// the view shows what it holds and judges nothing.
func TestWriteViewOneNodeOfMany(t *testing.T) {
	self, left, right := id.ID{0x80}, id.ID{0x40}, id.ID{0xc0}
	r := node.StatusReport{Nodes: []node.Status{{
		ID: self.String(), Short: self.Short(), Running: true, Active: true,
		LeafSetSize: 16, Left: []string{left.String()}, Right: []string{right.String()}, LeafSet: 2,
	}}}
	var view strings.Builder
	if err := WriteView(&view, r); err != nil {
		t.Fatal(err)
	}
	if v := view.String(); strings.Contains(v, "not ready") || !strings.Contains(v, "leaf sets as held") ||
		!strings.Contains(v, self.Short()+"  yes      2 ") {
		t.Errorf("terminal view of one node of three:\n%s", v)
	}
}

// TestWelcomeMessage checks that the welcome message parses as mail, from
// an address in the user's domain.
func TestWelcomeMessage(t *testing.T) {
	m, err := mail.ReadMessage(strings.NewReader(welcomeMessage("bob@demo.epost", time.Now())))
	if err != nil {
		t.Fatal(err)
	}
	from, err := mail.ParseAddress(m.Header.Get("From"))
	if err != nil || from.Address != "welcome@demo.epost" {
		t.Fatalf("From %q: %v, %v", m.Header.Get("From"), from, err)
	}
	if to := m.Header.Get("To"); to != "bob@demo.epost" {
		t.Fatalf("To %q", to)
	}
}
