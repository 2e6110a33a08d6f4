// Package demo runs a throwaway epost community inside one process: a
// fresh community CA, N real nodes on loopback libp2p joined into one
// Pastry ring, and a status page watching all of them. `epost demo` is
// its face on the command line, and tests start one the same way; users,
// IMAP and SMTP join the community here as those layers land.
//
// Invariants:
//   - Nothing is written to disk: the CA key and every node key live only
//     as long as the Community.
//   - Overlay state is read only through node.Status, on each node's own
//     event loop; this package never touches an overlay directly.
//   - After Close returns, every node is closed (its goroutines have
//     exited) and the status page no longer listens.
package demo

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/node"
	"github.com/epost-mail/epost/internal/overlay"
)

// MaxNodes bounds Config.Nodes: every node is a libp2p host in this one
// process, holding streams to its leaf set and routing table, so file
// descriptors and the CPU run out long before the overlay does.
const MaxNodes = 100

// ErrConfig marks a Config that Start refuses.
var ErrConfig = errors.New("demo: bad config")

// Config says what community Start builds.
type Config struct {
	// Nodes is the number of nodes, 1..MaxNodes.
	Nodes int
	// HTTP is the status page's listen address (host:port, port 0 picks a
	// free one); empty runs no page.
	HTTP string
	// Overlay holds the Pastry parameters every node runs.
	Overlay overlay.Config
	// JoinTimeout bounds how long one node may take to join the ring
	// before Start gives up.
	JoinTimeout time.Duration
	// OnNode, when set, is called (on Start's goroutine) as each node has
	// joined, with its index.
	OnNode func(i int, nd *node.Node)
	// Log is the base logger of every node; nil discards.
	Log *slog.Logger
	// Dir holds the nodes' stores; empty uses a temporary directory that
	// Close removes.
	Dir string
	// Users gives every node a user with IMAP and SMTP listeners.
	Users bool
}

// DefaultConfig is eight nodes and a status page on a free loopback port.
func DefaultConfig() Config {
	return Config{
		Nodes:       8,
		HTTP:        "127.0.0.1:0",
		Overlay:     OverlayConfig(),
		JoinTimeout: 60 * time.Second,
		Users:       true,
	}
}

// OverlayConfig is overlay.DefaultConfig with timeouts floored at 1 s
// instead of 100 ms. Loopback round trips are far below a millisecond,
// but all the nodes share this process's CPU and garbage collector, whose
// pauses (hundreds of milliseconds on a busy machine) would otherwise
// pass for lost messages and trigger needless re-routes and probes. A
// real node has its machine to itself.
func OverlayConfig() overlay.Config {
	c := overlay.DefaultConfig()
	c.MinTimeout = 1 * env.Second
	return c
}

// Community is a running demo community.
type Community struct {
	cfg Config
	ca  *identity.CA

	mu    sync.Mutex
	nodes []*node.Node // in start order

	users    []User
	accounts []account      // the users' keys and nodes, as users
	closers  []func() error // the users' servers
	pw       passwords
	dir      string
	ownDir   bool
	saved    savedState
	resumed  bool

	srv       *http.Server
	url       string
	served    chan struct{} // closed when the page's Serve returns
	closeOnce sync.Once
	closeErr  error
}

// Start creates a community CA, issues a certificate to each of
// cfg.Nodes nodes, and starts them on loopback one after another: the
// first creates the ring, each later one joins through the nodes already
// in it and is active before the next starts, so every join is a clean
// one. It returns once every node has joined; leaf sets may still be
// settling (see Ready). If ctx ends first, or a node fails to join,
// everything started is closed and the error returned.
func Start(ctx context.Context, cfg Config) (*Community, error) {
	if cfg.Nodes < 1 || cfg.Nodes > MaxNodes {
		return nil, fmt.Errorf("%w: %d nodes, want 1..%d", ErrConfig, cfg.Nodes, MaxNodes)
	}
	if cfg.Overlay.LeafSetSize < 2 || cfg.Overlay.LeafSetSize%2 != 0 {
		return nil, fmt.Errorf("%w: leaf set size %d, want an even number >= 2", ErrConfig, cfg.Overlay.LeafSetSize)
	}
	if cfg.JoinTimeout <= 0 {
		cfg.JoinTimeout = DefaultConfig().JoinTimeout
	}
	if cfg.Log == nil {
		cfg.Log = env.Discard
	}
	c := &Community{cfg: cfg, pw: passwords{}, dir: cfg.Dir}
	var err error
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "epost-demo-"); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		c.ownDir = true
	} else if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if !c.ownDir {
		if c.saved, c.resumed, err = loadState(c.dir); err != nil {
			return nil, err
		}
	}
	if c.resumed {
		if c.ca, err = identity.ReadCA(c.dir); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		if len(c.saved.Nodes) != cfg.Nodes {
			return nil, fmt.Errorf("%w: %s holds a demo of %d nodes, not %d", ErrConfig, c.dir, len(c.saved.Nodes), cfg.Nodes)
		}
	} else {
		if c.ca, err = identity.NewCA(rand.Reader); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		if !c.ownDir {
			if err := identity.WriteCA(c.dir, c.ca); err != nil {
				return nil, fmt.Errorf("demo: %w (is %s another community's directory?)", err, c.dir)
			}
		}
	}
	if cfg.HTTP != "" {
		if err := c.serve(cfg.HTTP); err != nil {
			return nil, err
		}
	}
	for i := range cfg.Nodes {
		if err := c.startNode(ctx, i); err != nil {
			return nil, errors.Join(err, c.Close())
		}
	}
	if cfg.Users {
		// Every password exists before any server reads the map.
		for i := range c.Nodes() {
			pw, err := newPassword()
			if err != nil {
				return nil, errors.Join(err, c.Close())
			}
			if c.resumed && i < len(c.saved.Users) {
				pw = c.saved.Users[i].Password
			}
			c.pw[userName(i)+"@"+Domain] = pw
		}
		for i, nd := range c.Nodes() {
			if err := c.startUser(ctx, i, nd); err != nil {
				return nil, errors.Join(err, c.Close())
			}
		}
	}
	if err := c.saveState(); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

// serve starts the status page.
func (c *Community) serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("demo: status page: %w", err)
	}
	title := fmt.Sprintf("epost demo: %d nodes", c.cfg.Nodes)
	c.srv = &http.Server{
		Handler:           node.StatusHandler(title, c.Nodes),
		ReadHeaderTimeout: 10 * time.Second,
	}
	c.url = "http://" + ln.Addr().String() + "/"
	c.served = make(chan struct{})
	go func() {
		defer close(c.served)
		_ = c.srv.Serve(ln) // ErrServerClosed once Close shuts it down
	}()
	return nil
}

// startNode issues node i a certificate, starts it, and waits until it
// has joined.
func (c *Community) startNode(ctx context.Context, i int) error {
	key, cert, err := c.nodeFiles(i)
	if err != nil {
		return fmt.Errorf("demo: node %d: %w", i, err)
	}
	listen := "/ip4/127.0.0.1/tcp/0"
	if c.resumed {
		listen = c.saved.Nodes[i] // the same address, so the others find it again
	}
	// Join through the nodes already in the ring, the newest first: if
	// one does not let this node in, the node moves on to the next.
	var boots []env.Addr
	for _, nd := range slices.Backward(c.Nodes()) {
		boots = append(boots, nd.Addr())
	}
	nd, err := node.New(node.Config{
		ListenAddrs: []string{listen},
		Key:         key,
		Cert:        cert,
		CA:          c.ca.Public(),
		Bootstrap:   boots,
		Overlay:     c.cfg.Overlay,
		Log:         c.cfg.Log,
		DataDir:     filepath.Join(c.dir, "store", nodeName(i)),
		Community:   c.cfg.Nodes,
	})
	if err != nil {
		return fmt.Errorf("demo: node %d: %w", i, err)
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, nd) // from here on Close closes it
	c.mu.Unlock()
	if err := nd.Start(); err != nil {
		return fmt.Errorf("demo: node %d: %w", i, err)
	}
	deadline := time.Now().Add(c.cfg.JoinTimeout)
	if err := poll(ctx, deadline, 10*time.Millisecond, nd.Active); err != nil {
		return fmt.Errorf("demo: node %d (%s) joining: %w", i, nd.ID().Short(), err)
	}
	if c.cfg.OnNode != nil {
		c.cfg.OnNode(i, nd)
	}
	return nil
}

// errTimeout: a condition did not come true in time.
var errTimeout = errors.New("timed out")

// poll calls cond every interval until it holds, ctx ends, or the
// deadline passes.
func poll(ctx context.Context, deadline time.Time, interval time.Duration, cond func() bool) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return errTimeout
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Nodes returns the community's nodes in start order (a copy; closed
// nodes stay listed).
func (c *Community) Nodes() []*node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// CA is the community's CA: later layers issue user certificates with it.
func (c *Community) CA() *identity.CA { return c.ca }

// StatusURL is the status page's address, "" when it has none.
func (c *Community) StatusURL() string { return c.url }

// Report is a snapshot of every node, sorted by id.
func (c *Community) Report() node.StatusReport {
	return node.Report(fmt.Sprintf("epost demo: %d nodes", c.cfg.Nodes), c.Nodes())
}

// Ready reports whether every node is running and active and holds
// exactly the leaf set the community's membership implies (every other
// node while there are at most L+1 nodes); if not, why names the first
// node that falls short.
func (c *Community) Ready() (ok bool, why string) {
	return ready(c.Report())
}

func ready(r node.StatusReport) (bool, string) {
	if len(r.Nodes) == 0 {
		return false, "no nodes"
	}
	var all []id.ID
	for _, s := range r.Nodes {
		x, err := id.Parse(s.ID)
		if err != nil {
			return false, fmt.Sprintf("node %s: %v", s.Short, err)
		}
		all = append(all, x)
	}
	for i, s := range r.Nodes {
		if !s.Running || !s.Active {
			return false, fmt.Sprintf("node %s is not active", s.Short)
		}
		want := ExpectedLeafSet(all[i], all, s.LeafSetSize)
		var got []id.ID
		for _, h := range append(slices.Clone(s.Left), s.Right...) {
			x, err := id.Parse(h)
			if err != nil {
				return false, fmt.Sprintf("node %s: leaf set: %v", s.Short, err)
			}
			if !slices.Contains(got, x) {
				got = append(got, x)
			}
		}
		slices.SortFunc(got, id.ID.Cmp)
		if !slices.Equal(got, want) {
			return false, fmt.Sprintf("node %s holds %d of its %d leaf-set members (and %d others)",
				s.Short, len(want)-len(minus(want, got)), len(want), len(minus(got, want)))
		}
	}
	return true, ""
}

// ExpectedLeafSet is the leaf set self holds in a settled ring of
// members (self may be among them): the size/2 nearest on each side, or
// every other member when there are at most size of them. Sorted by id.
func ExpectedLeafSet(self id.ID, members []id.ID, size int) []id.ID {
	size = max(size, 0) // the size comes from a status report, which `epost status` reads from any URL
	var others []id.ID
	for _, x := range members {
		if x != self && !slices.Contains(others, x) {
			others = append(others, x)
		}
	}
	if len(others) > size {
		nearest := func(dist func(id.ID) id.ID) []id.ID {
			s := slices.Clone(others)
			slices.SortFunc(s, func(a, b id.ID) int { return dist(a).Cmp(dist(b)) })
			return s[:size/2]
		}
		others = append(nearest(self.CW), nearest(self.CCW)...)
	}
	slices.SortFunc(others, id.ID.Cmp)
	return slices.Compact(others)
}

// minus returns the ids in a that are not in b.
func minus(a, b []id.ID) []id.ID {
	var out []id.ID
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// WaitReady polls Ready until it holds, ctx ends, or timeout passes; the
// error then says which node is not ready.
func (c *Community) WaitReady(ctx context.Context, timeout time.Duration) error {
	var why string
	err := poll(ctx, time.Now().Add(timeout), 50*time.Millisecond, func() bool {
		var ok bool
		ok, why = c.Ready()
		return ok
	})
	if err != nil {
		return fmt.Errorf("demo: not ready: %w: %s", err, why)
	}
	return nil
}

// WriteView writes the compact terminal view of r: a summary line, then
// one line per node with its short id, whether it is active, its leaf set
// (members held / members a settled ring gives it; only those held when
// r is one node's own report, the rest of the ring out of view), its filled
// routing-table slots, and the messages delivered to it.
func WriteView(w io.Writer, r node.StatusReport) error {
	ok, why := ready(r)
	state := "ready"
	if !ok {
		state = "not ready: " + why
	}
	active := 0
	var all []id.ID
	for _, s := range r.Nodes {
		if s.Running && s.Active {
			active++
		}
		if x, err := id.Parse(s.ID); err == nil {
			all = append(all, x)
		}
	}
	// A node's own status page reports that node alone: the rest of the
	// ring is out of view, so what its leaf set should hold is unknown.
	partial := false
	for _, s := range r.Nodes {
		for _, h := range append(slices.Clone(s.Left), s.Right...) {
			if x, err := id.Parse(h); err == nil && !slices.Contains(all, x) {
				partial = true
			}
		}
	}
	if partial {
		state = "leaf sets as held (their other members are not in this report)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %d nodes, %d active, %s\n", time.Now().Format("15:04:05"), len(r.Nodes), active, state)
	fmt.Fprintf(&b, "  %-8s  %-7s  %-7s  %-5s  %s\n", "node", "active", "leaf", "table", "delivered")
	for _, s := range r.Nodes {
		act := "no"
		switch {
		case !s.Running:
			act = "stopped"
		case s.Active:
			act = "yes"
		}
		leaf := fmt.Sprint(s.LeafSet)
		if x, err := id.Parse(s.ID); err == nil && !partial {
			leaf = fmt.Sprintf("%d/%d", s.LeafSet, len(ExpectedLeafSet(x, all, s.LeafSetSize)))
		}
		fmt.Fprintf(&b, "  %-8s  %-7s  %-7s  %-5d  %d\n", s.Short, act, leaf, s.TableEntries, s.Delivered)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Close stops the status page, then every node. It is idempotent; every
// call returns the first call's error.
func (c *Community) Close() error {
	c.closeOnce.Do(func() {
		nodes := c.Nodes()
		var errs []error
		if c.srv != nil {
			// Let a request in flight finish; its reads of the nodes are
			// short (each node's loop answers between two events).
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := c.srv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("demo: status page: %w", err), c.srv.Close())
			}
			cancel()
			<-c.served
		}
		c.mu.Lock()
		closers := c.closers
		c.mu.Unlock()
		for _, f := range closers {
			errs = append(errs, f())
		}
		for _, nd := range slices.Backward(nodes) {
			errs = append(errs, nd.Close())
		}
		if c.ownDir {
			errs = append(errs, os.RemoveAll(c.dir))
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}
