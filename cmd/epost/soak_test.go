package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// The soak test's knobs. SOAK_DURATION and SOAK_SEED in the environment
// set them too (`make soak` does); unset, the test runs a short load that
// `make test` can afford.
var (
	soakDuration = flag.Duration("soak.duration", 0, "how long TestSoak sends mail under faults, at least one fault of each kind (0: $SOAK_DURATION, else 15s)")
	soakSeed     = flag.Uint64("soak.seed", 0, "TestSoak's random seed (0: $SOAK_SEED, else the clock)")
)

const (
	soakNodes    = 8
	soakPassword = "correct horse battery"
	// rejoinLimit is how long a starting node may take to be ready: a
	// join that fails is retried every 10s (overlay JoinTimeout), and the
	// first one after a crash may meet a connection to the dead process
	// (10 s of hello timeout); a loaded machine (the race detector, other
	// packages' tests) needs a few tries more.
	rejoinLimit = 45 * time.Second
)

// soakNode is one `epost node` OS process of the soak community, across
// its restarts. Its libp2p address stays put: after the first start its
// configuration listens on the port it was given, as a deployed node's
// does.
type soakNode struct {
	i        int
	name     string
	cfg      string
	logDir   string
	users    []string
	pinPort  bool // restarts listen on the first run's port
	runs     int
	mu       sync.Mutex // guards the fields below
	cmd      *exec.Cmd
	done     chan struct{} // closed when cmd has exited
	killed   bool          // by the harness, on purpose
	up       bool
	addr     string // libp2p address with /p2p/ID, as last printed
	imap     string
	smtp     string
	status   string
	crashErr error // an exit the harness did not cause
}

// soakCounts are the numbers the soak reports.
type soakCounts struct {
	faults, kills, partitions, clockJumps, stalls, sent, acked, delivered, lost, duplicated, unexpected atomic.Int64
	folderOps, folderAcked, folderLost                                                                  atomic.Int64
}

// soakLogLevel is the nodes' log level: info, or SOAK_LOG (debug shows
// the overlay's decisions when a run needs explaining).
func soakLogLevel() string {
	if l := os.Getenv("SOAK_LOG"); l != "" {
		return l
	}
	return "info"
}

// TestSoak runs a community of 8 `epost node` processes on loopback, four
// of them serving a user each, and sends mail between the users by SMTP
// while it kills nodes with SIGKILL and restarts them (a random one, the
// sender's node right after its 250, a node that is storing replicas while
// inserts run), partitions the ring in two and moves a node's wall clock
// by two years and back, through the nodes' test-only fault switch. After
// healing, restarting and letting delivery settle, every message that got
// a 250 must be in its recipient's INBOX exactly once. Reproduce a run with its printed seed: -soak.seed or SOAK_SEED.
func TestSoak(t *testing.T) {
	dur := *soakDuration
	if dur == 0 {
		dur = 15 * time.Second
		if s := os.Getenv("SOAK_DURATION"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				t.Fatalf("SOAK_DURATION=%q: %v", s, err)
			}
			dur = d
		}
	}
	seed := *soakSeed
	if seed == 0 {
		if s := os.Getenv("SOAK_SEED"); s != "" {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				t.Fatalf("SOAK_SEED=%q: %v", s, err)
			}
			seed = v
		} else {
			seed = uint64(time.Now().UnixNano())
		}
	}
	t.Logf("soak: seed %d, load for %v (rerun with SOAK_SEED=%d SOAK_DURATION=%v)", seed, dur, seed, dur)
	// A restarted node listens on its old port, as a deployed node does
	// (the harder case: peers failed to dial that address while it was
	// down); SOAK_NEW_PORT=1 gives it a fresh one instead.
	samePort := os.Getenv("SOAK_NEW_PORT") != "1"
	t.Logf("soak: restarts on the same port: %v", samePort)
	begin := time.Now()

	bin := filepath.Join(t.TempDir(), "epost")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// Users on nodes 1, 3, 5 and 7: the partition below puts two on each
	// side, and every one of them may be killed. Node 0 is the bootstrap
	// and stays up.
	names := make([]string, soakNodes)
	for i := range names {
		names[i] = fmt.Sprintf("n%d", i)
	}
	var users []string
	userNode := map[string]*soakNode{}
	for i := 1; i < soakNodes; i += 2 {
		users = append(users, fmt.Sprintf("user%d@example.org", i))
	}
	dir := newCommunity(t, names, users, soakPassword)
	// SOAK_LOGDIR keeps every run's log for a post-mortem.
	logDir := os.Getenv("SOAK_LOGDIR")
	if logDir == "" {
		logDir = t.TempDir()
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	nodes := make([]*soakNode, soakNodes)
	edits := []string{`status = ""`, `status = "127.0.0.1:0"`, `community = 0`, `community = 8`,
		// A lost notification (its holder killed, a partition) is
		// otherwise picked up by the 5-minute poll: poll often, so that
		// the short run settles quickly.
		`poll = ""`, `poll = "5s"`,
		`log = "warn"`, `log = "` + soakLogLevel() + `"`}
	for i := range nodes {
		nodes[i] = &soakNode{i: i, name: names[i], logDir: logDir, pinPort: samePort}
		if i%2 == 1 {
			nodes[i].users = []string{fmt.Sprintf("user%d@example.org", i)}
			userNode[nodes[i].users[0]] = nodes[i]
		}
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop()
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range nodes {
				t.Logf("%s log tail:\n%s", n.name, n.logTail())
			}
		}
	})
	var c soakCounts
	logf := func(format string, args ...any) {
		t.Logf("soak %6.1fs: "+format, append([]any{time.Since(begin).Seconds()}, args...)...)
	}
	report := func() {
		t.Logf("SOAK RESULT: seed=%d load=%v total=%v faults=%d (kills=%d partitions=%d clock-jumps=%d) join-stalls=%d sent=%d acked250=%d delivered=%d lost=%d duplicated=%d delivered-without-250=%d folder-ops=%d folder-acked=%d folder-lost=%d",
			seed, dur, time.Since(begin).Round(time.Second), c.faults.Load(), c.kills.Load(), c.partitions.Load(), c.clockJumps.Load(), c.stalls.Load(),
			c.sent.Load(), c.acked.Load(), c.delivered.Load(), c.lost.Load(), c.duplicated.Load(), c.unexpected.Load(),
			c.folderOps.Load(), c.folderAcked.Load(), c.folderLost.Load())
	}
	// bringUp starts n and waits until it has joined the ring; a node
	// that does not join within rejoinLimit fails the test. (Nodes that
	// restarted at an address others had failed to dial used to stall
	// here: libp2p's dial backoff kept them unreachable for minutes. The
	// transport now clears it for every new stream.)
	bringUp := func(n *soakNode, what string) {
		t.Helper()
		began := time.Now()
		if err := n.start(bin, rejoinLimit); err != nil {
			if errors.Is(err, errJoinStall) {
				c.stalls.Add(1)
				report()
			}
			t.Fatalf("%s (run %d) %s: %v; seed %d", n.name, n.runs, what, err, seed)
		}
		logf("%s %s, ready after %v", n.name, what, time.Since(began).Round(time.Millisecond))
	}
	nodes[0].cfg = loopbackConfig(t, dir, names[0], "", nil, edits...)
	bringUp(nodes[0], "started the ring")
	boot := nodes[0].addr
	for _, n := range nodes[1:] {
		n.cfg = loopbackConfig(t, dir, n.name, boot, n.users, edits...)
		bringUp(n, "started")
	}
	t.Logf("soak: %d nodes up after %v", soakNodes, time.Since(begin).Round(time.Millisecond))

	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	var rngMu sync.Mutex
	randN := func(n int) int {
		rngMu.Lock()
		defer rngMu.Unlock()
		return rng.IntN(n)
	}

	// The load: a message every 300ms or so between two different users,
	// each on its own connection, so that a send stalled by a fault does
	// not hold the others up.
	type sentMsg struct{ token, to string }
	var (
		ackMu    sync.Mutex
		acked    []sentMsg
		everSent = map[string]string{} // token -> recipient, every attempt
	)
	killSender := make(chan *soakNode, 1)
	var armed atomic.Bool // the next 250 kills its sender's node
	stopLoad := make(chan struct{})
	endLoad := sync.OnceFunc(func() { close(stopLoad) })
	defer endLoad()
	var loadWG sync.WaitGroup
	loadWG.Go(func() {
		var sends sync.WaitGroup
		defer sends.Wait()
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			select {
			case <-stopLoad:
				return
			case <-tick.C:
			}
			from := users[randN(len(users))]
			to := users[randN(len(users)-1)]
			if to == from {
				to = users[len(users)-1]
			}
			token := fmt.Sprintf("soak-%d-%d", seed, seq)
			sn := userNode[from]
			ackMu.Lock()
			everSent[token] = to
			ackMu.Unlock()
			c.sent.Add(1)
			sends.Go(func() {
				_, smtpAddr, ok := sn.endpoints()
				if !ok {
					return // its node is down: the client would retry later
				}
				msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.org>\r\nDate: %s\r\n\r\nsoak message %s\r\n",
					from, to, token, token, time.Now().Format(time.RFC1123Z), token)
				if err := submit(smtpAddr, from, soakPassword, to, msg); err != nil {
					return
				}
				if armed.CompareAndSwap(true, false) {
					sn.kill()
					killSender <- sn
				}
				c.acked.Add(1)
				ackMu.Lock()
				acked = append(acked, sentMsg{token, to})
				ackMu.Unlock()
			})
		}
	})

	// Folder changes beside the mail, about two a second: a message
	// filed into the Soak folder, or an INBOX message flagged. Each one the
	// server acknowledged must be visible at the end.
	var (
		appended = map[string]map[string]bool{} // user -> acknowledged tokens in Soak
		flaggedT = map[string]map[string]bool{} // user -> acknowledged flagged tokens in INBOX
	)
	loadWG.Go(func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for k := 1; ; k++ {
			select {
			case <-stopLoad:
				return
			case <-tick.C:
			}
			u := users[randN(len(users))]
			token, flagToken := fmt.Sprintf("soak-%d-fold-%d", seed, k), ""
			if randN(2) == 0 {
				ackMu.Lock()
				var mine []string
				for _, m := range acked {
					if m.to == u {
						mine = append(mine, m.token)
					}
				}
				ackMu.Unlock()
				if len(mine) > 0 {
					flagToken = mine[randN(len(mine))]
				}
			}
			c.folderOps.Add(1)
			ok, _ := folderOp(userNode[u], u, token, flagToken)
			if !ok {
				continue // not acknowledged: the client would try again
			}
			c.folderAcked.Add(1)
			ackMu.Lock()
			m := appended
			if flagToken != "" {
				m, token = flaggedT, flagToken
			}
			if m[u] == nil {
				m[u] = map[string]bool{}
			}
			m[u][token] = true
			ackMu.Unlock()
		}
	})

	// The faults, one at a time, in a seeded order, until the load's time
	// is up.
	restart := func(n *soakNode, down time.Duration) {
		t.Helper()
		time.Sleep(down) // the node is down for this long: nothing to poll
		bringUp(n, "is back")
	}
	randomNode := func() *soakNode { return nodes[1+randN(soakNodes-1)] }
	kinds := []string{"kill-sender", "partition", "kill-random", "clock-jump", "kill-replica"}
	loadEnd := time.Now().Add(dur)
	// Let some mail flow before the first fault.
	for c.acked.Load() < 3 {
		if time.Since(begin) > 3*time.Minute {
			t.Fatal("no mail gets through before any fault")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Every kind of fault once, in order, then random ones until the
	// load's time is up.
	for f := 0; f < len(kinds) || time.Now().Before(loadEnd); f++ {
		kind := kinds[f%len(kinds)]
		if f >= len(kinds) {
			kind = kinds[randN(len(kinds))]
		}
		down := time.Duration(1000+randN(3000)) * time.Millisecond
		switch kind {
		case "kill-random":
			n := randomNode()
			n.kill()
			c.faults.Add(1)
			c.kills.Add(1)
			logf("killed %s (random), down for %v", n.name, down)
			restart(n, down)
		case "kill-sender":
			armed.Store(true)
			select {
			case n := <-killSender:
				c.faults.Add(1)
				c.kills.Add(1)
				logf("killed %s right after its user's 250, down for %v", n.name, down)
				restart(n, down)
			case <-time.After(30 * time.Second):
				if armed.CompareAndSwap(true, false) {
					logf("no 250 in 30s to kill the sender after")
				} else {
					n := <-killSender
					c.faults.Add(1)
					c.kills.Add(1)
					restart(n, down)
				}
			}
		case "kill-replica":
			// The node whose store grew most over a second while mail
			// is being inserted holds replicas of those inserts.
			before := storeObjects(nodes)
			time.Sleep(time.Second) // the sampling window
			after := storeObjects(nodes)
			n, grew := randomNode(), int64(-1)
			for _, m := range nodes[1:] {
				if d := after[m.i] - before[m.i]; d > grew {
					n, grew = m, d
				}
			}
			n.kill()
			c.faults.Add(1)
			c.kills.Add(1)
			logf("killed %s (its store grew by %d objects in the last second), down for %v", n.name, grew, down)
			restart(n, down)
		case "clock-jump":
			// Years off, then set right, as a machine with a dead clock
			// battery that syncs later. Leases count renewals, not dates.
			n := randomNode()
			hold := time.Duration(3000+randN(4000)) * time.Millisecond
			const years = "17520h"
			if err := n.post("/debug/faults/clock?jump=" + years); err != nil {
				t.Fatalf("clock jump on %s: %v", n.name, err)
			}
			c.faults.Add(1)
			c.clockJumps.Add(1)
			logf("moved %s's clock 2 years ahead for %v", n.name, hold)
			time.Sleep(hold) // the clock stays wrong this long: nothing to poll
			if err := n.post("/debug/faults/clock?jump=-" + years); err != nil {
				t.Fatalf("clock jump back on %s: %v", n.name, err)
			}
			logf("set %s's clock right again", n.name)
		case "partition":
			hold := time.Duration(4000+randN(6000)) * time.Millisecond
			a, b := nodes[:soakNodes/2], nodes[soakNodes/2:]
			if err := partition(a, b); err != nil {
				t.Fatal(err)
			}
			if err := partition(b, a); err != nil {
				t.Fatal(err)
			}
			c.faults.Add(1)
			c.partitions.Add(1)
			logf("partitioned n0-n3 from n4-n7 for %v", hold)
			time.Sleep(hold) // the partition lasts this long: nothing to poll
			for _, n := range nodes {
				if err := n.post("/debug/faults/heal"); err != nil {
					t.Fatalf("heal %s: %v", n.name, err)
				}
			}
			logf("healed the partition")
		}
		if f+1 < len(kinds) || time.Now().Before(loadEnd) {
			time.Sleep(time.Duration(500+randN(1500)) * time.Millisecond) // a pause between faults
		}
	}
	endLoad()
	loadWG.Wait()
	if armed.Load() {
		t.Fatal("a sender kill was still armed after the load")
	}
	for _, n := range nodes {
		if err := n.crashed(); err != nil {
			t.Errorf("%s exited on its own: %v\n%s", n.name, err, n.logTail())
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	logf("load over: %d sent, %d acknowledged; waiting for delivery", c.sent.Load(), c.acked.Load())

	// Settle: every acknowledged message must arrive. Poll the INBOXes
	// until they all have, or the generous deadline passes.
	want := map[string]map[string]bool{} // recipient -> acknowledged tokens
	for _, m := range acked {
		if want[m.to] == nil {
			want[m.to] = map[string]bool{}
		}
		want[m.to][m.token] = true
	}
	settleDeadline := time.Now().Add(5 * time.Minute)
	var got, filed map[string]map[string]int
	var flags map[string]map[string]bool
	for polls := 1; ; polls++ {
		got, filed, flags = map[string]map[string]int{}, map[string]map[string]int{}, map[string]map[string]bool{}
		missing := 0
		for _, u := range users {
			counts, fl, err := mailboxTokens(userNode[u], u, "INBOX", fmt.Sprintf("soak-%d-", seed))
			if err == nil && len(appended[u]) > 0 {
				filed[u], _, err = mailboxTokens(userNode[u], u, "Soak", fmt.Sprintf("soak-%d-fold-", seed))
			}
			if err != nil {
				if polls%20 == 1 {
					logf("reading %s's mailboxes: %v", u, err)
				}
				missing = -1
				break
			}
			got[u], flags[u] = counts, fl
			for tok := range want[u] {
				if counts[tok] == 0 {
					missing++
				}
			}
			for tok := range appended[u] {
				if filed[u][tok] == 0 {
					missing++
				}
			}
			for tok := range flaggedT[u] {
				if !fl[tok] {
					missing++
				}
			}
		}
		if missing == 0 || time.Now().After(settleDeadline) {
			break
		}
		if polls%20 == 0 && missing > 0 {
			logf("%d acknowledged messages not delivered yet", missing)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, u := range users {
		for tok, n := range got[u] {
			if n > 1 {
				c.duplicated.Add(int64(n - 1))
				t.Errorf("%s has %d copies of %s", u, n, tok)
			}
			if want[u][tok] {
				c.delivered.Add(1)
			} else if everSent[tok] == u {
				c.unexpected.Add(1) // sent without a 250, and arrived: allowed
			} else {
				t.Errorf("%s has %s, which was not sent to it", u, tok)
			}
		}
		for tok := range want[u] {
			if got[u][tok] == 0 {
				c.lost.Add(1)
				t.Errorf("lost: %s never reached %s after its 250", tok, u)
			}
		}
		for tok, n := range filed[u] {
			if n > 1 {
				c.duplicated.Add(int64(n - 1))
				t.Errorf("%s's Soak folder has %d copies of %s", u, n, tok)
			}
		}
		for tok := range appended[u] {
			if filed[u][tok] == 0 {
				c.folderLost.Add(1)
				t.Errorf("lost: %s was filed in %s's Soak folder (APPEND acknowledged) and is not there", tok, u)
			}
		}
		for tok := range flaggedT[u] {
			if !flags[u][tok] {
				c.folderLost.Add(1)
				t.Errorf("lost: %s's INBOX message %s was flagged (STORE acknowledged) and is not flagged", u, tok)
			}
		}
	}
	report()
}

// errJoinStall is a node that keeps running but does not join the ring.
var errJoinStall = errors.New("node not in the ring")

var joinedRE = regexp.MustCompile(`(?m)^joined the ring$`)

// start runs the node's process and waits until it is ready.
func (n *soakNode) start(bin string, d time.Duration) error {
	n.mu.Lock()
	n.runs++
	logFile, err := os.Create(filepath.Join(n.logDir, fmt.Sprintf("%s-run%d.log", n.name, n.runs)))
	if err != nil {
		n.mu.Unlock()
		return err
	}
	out := &syncBuffer{}
	cmd := exec.Command(bin, "node", "--config", n.cfg)
	cmd.Env = append(os.Environ(), faultsEnv+"=1")
	cmd.Stdout = out
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		n.mu.Unlock()
		logFile.Close()
		return err
	}
	done := make(chan struct{})
	n.cmd, n.done, n.killed, n.up = cmd, done, false, false
	n.mu.Unlock()
	seen := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		logFile.Close()
		n.mu.Lock()
		if !n.killed && n.cmd == cmd {
			n.crashErr = fmt.Errorf("run %d: %v", n.runs, err)
		}
		n.up = false
		n.mu.Unlock()
		close(done)
		seen <- err
	}()
	if _, err := pollOutput(out, readyRE, d, seen); err != nil {
		select {
		case <-done:
		default:
			if !joinedRE.MatchString(out.String()) {
				return fmt.Errorf("%w: %s: %v\n%s", errJoinStall, n.name, err, n.logTail())
			}
		}
		return fmt.Errorf("%s: %w\n%s", n.name, err, n.logTail())
	}
	s := out.String()
	addr := addrRE.FindStringSubmatch(s)[1]
	n.mu.Lock()
	defer n.mu.Unlock()
	if m := imapRE.FindStringSubmatch(s); m != nil {
		n.imap = m[1]
	}
	if m := smtpRE.FindStringSubmatch(s); m != nil {
		n.smtp = m[1]
	}
	n.status = statusOn.FindStringSubmatch(s)[1]
	n.up = true
	first := n.addr == ""
	if !first && peerID(addr) != peerID(n.addr) {
		return fmt.Errorf("%s came back as %s, not %s", n.name, addr, n.addr)
	}
	if !first && n.pinPort && addr != n.addr {
		return fmt.Errorf("%s came back at %s, not %s", n.name, addr, n.addr)
	}
	n.addr = addr
	if first && n.pinPort {
		// Keep the port from now on, so that restarts come back where
		// the others last saw this node, as a deployed node's do.
		port := regexp.MustCompile(`/tcp/(\d+)/`).FindStringSubmatch(addr)[1]
		b, err := os.ReadFile(n.cfg)
		if err != nil {
			return err
		}
		cfg := strings.Replace(string(b), `listen = ["/ip4/127.0.0.1/tcp/0"]`, `listen = ["/ip4/127.0.0.1/tcp/`+port+`"]`, 1)
		return os.WriteFile(n.cfg, []byte(cfg), 0o600)
	}
	return nil
}

func peerID(addr string) string { return addr[strings.LastIndex(addr, "/p2p/")+1:] }

// kill sends the node's process SIGKILL and waits for it to be gone.
func (n *soakNode) kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.killed, n.up = true, false
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-done
}

// stop ends the node's process at the end of the test: SIGTERM, then
// SIGKILL if it lingers.
func (n *soakNode) stop() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.killed = true
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// endpoints are the node's IMAP and SMTP addresses, if it is up.
func (n *soakNode) endpoints() (imapAddr, smtpAddr string, up bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.imap, n.smtp, n.up
}

func (n *soakNode) crashed() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.crashErr
}

// post calls the node's status server (its fault switch).
func (n *soakNode) post(path string) error {
	n.mu.Lock()
	status := n.status
	n.mu.Unlock()
	cl := http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Post("http://"+status+path, "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return nil
}

// logTail is the end of the node's stderr over its latest run.
func (n *soakNode) logTail() string {
	n.mu.Lock()
	runs := n.runs
	n.mu.Unlock()
	b, _ := os.ReadFile(filepath.Join(n.logDir, fmt.Sprintf("%s-run%d.log", n.name, runs)))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// partition has every node of from cut its links to every node of to.
func partition(from, to []*soakNode) error {
	q := url.Values{}
	for _, n := range to {
		n.mu.Lock()
		q.Add("peer", n.addr)
		n.mu.Unlock()
	}
	for _, n := range from {
		if err := n.post("/debug/faults/block?" + q.Encode()); err != nil {
			return fmt.Errorf("partition %s: %w", n.name, err)
		}
	}
	return nil
}

var storeObjectsRE = regexp.MustCompile(`^epost_store_objects\{[^}]*\} (\d+)`)

// storeObjects reads each up node's object count from its /metrics (-1
// for a node it cannot read).
func storeObjects(nodes []*soakNode) []int64 {
	counts := make([]int64, len(nodes))
	cl := http.Client{Timeout: 5 * time.Second}
	for i, n := range nodes {
		counts[i] = -1
		n.mu.Lock()
		status, up := n.status, n.up
		n.mu.Unlock()
		if !up {
			continue
		}
		resp, err := cl.Get("http://" + status + "/metrics")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if m := storeObjectsRE.FindStringSubmatch(sc.Text()); m != nil {
				counts[i], _ = strconv.ParseInt(m[1], 10, 64)
			}
		}
		resp.Body.Close()
	}
	return counts
}

// mailboxTokens counts the messages in user's mailbox on node n by
// subject, among those whose subject starts with prefix, and reports which
// of them carry the \Flagged flag.
func mailboxTokens(n *soakNode, user, mailbox, prefix string) (counts map[string]int, flagged map[string]bool, err error) {
	imapAddr, _, up := n.endpoints()
	if !up {
		return nil, nil, fmt.Errorf("%s is down", n.name)
	}
	cl, err := imapSession(imapAddr, user, soakPassword)
	if err != nil {
		return nil, nil, err
	}
	defer cl.Close()
	if _, err := cl.Select(mailbox, nil).Wait(); err != nil {
		return nil, nil, err
	}
	d, err := cl.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: prefix}}}, nil).Wait()
	if err != nil {
		return nil, nil, err
	}
	counts, flagged = map[string]int{}, map[string]bool{}
	uids := d.AllUIDs()
	if len(uids) == 0 {
		return counts, flagged, nil
	}
	msgs, err := cl.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{Envelope: true, Flags: true}).Collect()
	if err != nil {
		return nil, nil, err
	}
	for _, m := range msgs {
		if m.Envelope == nil || !strings.HasPrefix(m.Envelope.Subject, prefix) {
			continue
		}
		counts[m.Envelope.Subject]++
		if slices.Contains(m.Flags, imap.FlagFlagged) {
			flagged[m.Envelope.Subject] = true
		}
	}
	return counts, flagged, nil
}

// folderOp does one acknowledged-or-not folder operation as user on node
// n: append a message with subject token to the Soak folder (creating it
// first if needed), or, if flagToken is set, flag the INBOX message with
// that subject. It reports whether the server acknowledged the change
// (false when the message to flag is not there yet).
func folderOp(n *soakNode, user, token, flagToken string) (bool, error) {
	imapAddr, _, up := n.endpoints()
	if !up {
		return false, fmt.Errorf("%s is down", n.name)
	}
	cl, err := imapSession(imapAddr, user, soakPassword)
	if err != nil {
		return false, err
	}
	defer cl.Close()
	if flagToken != "" {
		if _, err := cl.Select("INBOX", nil).Wait(); err != nil {
			return false, err
		}
		d, err := cl.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: flagToken}}}, nil).Wait()
		if err != nil || len(d.AllUIDs()) == 0 {
			return false, err
		}
		err = cl.Store(imap.UIDSetNum(d.AllUIDs()...), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close()
		return err == nil, err
	}
	// CREATE of an existing folder fails; that is expected after the first.
	_ = cl.Create("Soak", nil).Wait()
	msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\nfiled by the soak\r\n", user, user, token)
	cmd := cl.Append("Soak", int64(len(msg)), nil)
	if _, err := cmd.Write([]byte(msg)); err != nil {
		return false, err
	}
	if err := cmd.Close(); err != nil {
		return false, err
	}
	if _, err := cmd.Wait(); err != nil {
		return false, err
	}
	return true, nil
}
