package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/epost-mail/epost/internal/demo"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/node"
)

// demoReadyTimeout is how long the demo waits for settled leaf sets,
// once every node has joined, before it warns. A clean join already tells
// each leaf-set member about the joiner, so this is normally well under a
// second.
const demoReadyTimeout = 2 * time.Minute

// cmdDemo runs `epost demo` until SIGINT or SIGTERM.
func cmdDemo(args []string, stdout, stderr io.Writer) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		var first time.Time
		for {
			select {
			case <-done:
				return
			case <-sigs:
			}
			if first.IsZero() {
				first = time.Now()
				cancel()
				continue
			}
			// A second signal ends a shutdown that hangs. One within a
			// second counts as the first again: `timeout` and some
			// supervisors signal both the process and its group.
			if time.Since(first) > time.Second {
				fmt.Fprintln(stderr, "epost demo: second signal: exiting without stopping the nodes")
				os.Exit(1)
			}
		}
	}()
	return runDemo(ctx, args, stdout, stderr)
}

// runDemo is `epost demo` until ctx ends: it starts a community of real
// nodes on loopback, prints them and the status page's address, prints
// "ready" once the ring has settled, and then a view of the nodes every
// --refresh. When ctx ends it closes every node and returns nil.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("demo", "[--nodes N] [--dir DIR] [--http ADDR] [--refresh DURATION] [--log LEVEL] [--log-format text|json]", stderr)
	usage := flags.Usage
	flags.Usage = func() {
		usage()
		fmt.Fprintln(flags.Output(), `
Starts a throwaway community on this machine: a fresh CA, N real nodes on
loopback libp2p forming one Pastry ring, one user per node with IMAP and
SMTP on loopback (address, password and ports are printed, and written to
DIR/demo.json), and a status page drawing the ring. "ready" means every
user has sent a message by SMTP and received one over IMAP. Point any mail
client at the printed ports (plain, loopback only). Ctrl-C (or SIGTERM)
stops every node; without --dir the stores are removed then.`)
	}
	def := demo.DefaultConfig()
	nodes := flags.Int("nodes", def.Nodes, fmt.Sprintf("number of nodes (1..%d)", demo.MaxNodes))
	httpAddr := flags.String("http", def.HTTP, "status page address, host:port (port 0 picks a free port; empty: no page)")
	refresh := flags.Duration("refresh", 3*time.Second, "how often the terminal view is printed")
	dir := flags.String("dir", "", "directory for the nodes' stores and demo.json (default: a temporary one, removed at exit)")
	logLevel := flags.String("log", "warn", "node log level on stderr: debug, info, warn or error")
	logFormat := flags.String("log-format", "text", "log lines as text or json")
	backupWork := flags.Int("backup-work-factor", identity.DefaultScryptWorkFactor, "scrypt work factor (log2) of the users' key backups, sealed and published after ready")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		flags.Usage()
		return fmt.Errorf("%w: demo: unexpected argument %q", errUsage, pos[0])
	}
	if *nodes < 1 || *nodes > demo.MaxNodes {
		return fmt.Errorf("%w: demo: --nodes %d outside 1..%d", errUsage, *nodes, demo.MaxNodes)
	}
	if *refresh <= 0 {
		return fmt.Errorf("%w: demo: --refresh %v must be positive", errUsage, *refresh)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("%w: demo: --log %q: want debug, info, warn or error", errUsage, *logLevel)
	}

	cfg := def
	cfg.Nodes = *nodes
	cfg.HTTP = *httpAddr
	cfg.Dir = *dir
	if cfg.Log, err = newLogger(stderr, level, *logFormat); err != nil {
		return fmt.Errorf("%w: demo: --log-format: %v", errUsage, err)
	}
	cfg.OnNode = func(i int, nd *node.Node) {
		fmt.Fprintf(stdout, "node %-3d %s  %s\n", i+1, nd.ID().Short(), nd.Addr())
	}
	fmt.Fprintf(stdout, "epost demo: starting %d nodes on loopback (Ctrl-C stops them)\n", cfg.Nodes)
	c, err := demo.Start(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stdout, "stopped before every node had joined")
			return nil // the user asked to stop; Start closed what it started
		}
		return err
	}
	if u := c.StatusURL(); u != "" {
		fmt.Fprintf(stdout, "status page: %s\n", u)
	}
	if err := printUsers(c, *dir, stdout); err != nil {
		return errors.Join(err, c.Close())
	}
	err = watchDemo(ctx, c, *refresh, *backupWork, stdout)
	fmt.Fprintln(stdout, "stopping every node")
	if cerr := c.Close(); cerr != nil {
		return errors.Join(err, cerr)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "stopped")
	return nil
}

// watchDemo prints "ready" once the ring has settled, and the terminal
// view every refresh, until ctx ends. A ring that has not settled within
// demoReadyTimeout gets a warning naming the node that lags, and the
// demo keeps running so the status page can show what is wrong.
func watchDemo(ctx context.Context, c *demo.Community, refresh time.Duration, backupWork int, stdout io.Writer) error {
	var outMu sync.Mutex // the backup sealer prints one line too
	var sealer sync.WaitGroup
	defer sealer.Wait() // it stops at ctx's end, after the backup in hand
	check := time.NewTicker(50 * time.Millisecond)
	defer check.Stop()
	view := time.NewTicker(refresh)
	defer view.Stop()
	readyBy := time.Now().Add(demoReadyTimeout)
	warned := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-check.C:
			ok, why := c.Ready()
			if !ok {
				if !warned && time.Now().After(readyBy) {
					warned = true
					fmt.Fprintf(stdout, "warning: the ring has not settled after %v: %s\n", demoReadyTimeout, why)
				}
				continue
			}
			check.Stop() // ready is printed once
			if err := c.CheckMail(ctx, demoReadyTimeout); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				fmt.Fprintf(stdout, "warning: %v\n", err)
			} else {
				fmt.Fprintln(stdout, "ready")
				// Slow one-time work that mail does not need, after ready.
				sealer.Add(1)
				go func() {
					defer sealer.Done()
					n, err := c.SealBackups(ctx, backupWork)
					// scrypt at full cost leaves 256 MiB buffers behind;
					// give them back rather than wait for the next GC.
					debug.FreeOSMemory()
					outMu.Lock()
					defer outMu.Unlock()
					switch {
					case ctx.Err() != nil:
					case err != nil:
						fmt.Fprintf(stdout, "warning: key backups: %v\n", err)
					case n > 0:
						fmt.Fprintf(stdout, "key backups of %d users sealed and published (recovery codes in the users' directories)\n", n)
					}
				}()
			}
			fmt.Fprintln(stdout)
			if err := demo.WriteView(stdout, c.Report()); err != nil {
				return err
			}
			view.Reset(refresh)
		case <-view.C:
			fmt.Fprintln(stdout)
			if err := demo.WriteView(stdout, c.Report()); err != nil {
				return err
			}
		}
	}
}

// printUsers prints the users' table and, with a directory, writes the same
// as DIR/demo.json.
func printUsers(c *demo.Community, dir string, stdout io.Writer) error {
	us := c.Users()
	if len(us) == 0 {
		return nil
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "user\tpassword\tIMAP\tSMTP")
	for _, u := range us {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Address, u.Password, u.IMAP, u.SMTP)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	if dir == "" {
		return nil
	}
	b, err := json.MarshalIndent(struct {
		Users  []demo.User `json:"users"`
		Status string      `json:"status"`
	}{us, c.StatusURL()}, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "demo.json")
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "written to %s\n", path)
	return nil
}
