package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/libp2p/go-libp2p"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/gateway"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/imapd"
	"github.com/epost-mail/epost/internal/mailnet"
	"github.com/epost-mail/epost/internal/node"
	"github.com/epost-mail/epost/internal/post"
	"github.com/epost-mail/epost/internal/smtpd"
	"github.com/epost-mail/epost/internal/transport"
)

// nodeConfig is the TOML file `epost node --config` reads.
type nodeConfig struct {
	Dir       string   `toml:"dir"`
	Node      string   `toml:"node"`
	Listen    []string `toml:"listen"`
	Advertise string   `toml:"advertise"`
	Bootstrap []string `toml:"bootstrap"`
	Users     []string `toml:"users"`
	// UserQuota bounds each user's mail in bytes; 0 is unlimited, absent
	// is post.DefaultQuota.
	UserQuota *int64   `toml:"user_quota"`
	Domains   []string `toml:"domains"`
	IMAP      string   `toml:"imap"`
	SMTP      string   `toml:"smtp"`
	// MailTLSCert and MailTLSKey name the IMAP and SMTP servers'
	// certificate chain and key (PEM); unset, a self-signed pair is made.
	MailTLSCert string `toml:"mail_tls_cert"`
	MailTLSKey  string `toml:"mail_tls_key"`
	Status      string `toml:"status"`
	Log         string `toml:"log"`
	LogFormat   string `toml:"log_format"`
	// Community is about how many nodes the community has: it sizes the
	// archive's erasure code.
	Community int `toml:"community"`
	// Relay makes this node a circuit relay for members behind NAT;
	// Relays are relay members (full addresses) a node behind NAT keeps a
	// reservation on.
	Relay  bool     `toml:"relay"`
	Relays []string `toml:"relays"`
	// Gateways are the community's gateway users (the same list on every
	// node): their mail may carry any From.
	Gateways []string      `toml:"gateways"`
	Gateway  gatewayConfig `toml:"gateway"`
	// Poll is how often each user's pending mail is read in full, in
	// case a notification was lost (a Go duration); empty is POST's
	// default.
	Poll string `toml:"poll"`
	// ArchiveDelay bounds how long acknowledged mail waits before it is
	// archived (a Go duration); empty is Glacier's default.
	ArchiveDelay string `toml:"archive_delay"`

	// Parsed from Log, Poll and ArchiveDelay by parseConfig.
	level        slog.Level
	poll         time.Duration
	archiveDelay time.Duration
}

// parseConfig reads and checks a configuration file's contents.
func parseConfig(data []byte) (nodeConfig, error) {
	var cfg nodeConfig
	if _, err := toml.Decode(string(data), &cfg); err != nil {
		return cfg, err
	}
	if cfg.Node == "" || cfg.Dir == "" {
		return cfg, errors.New("dir and node are required")
	}
	if cfg.Log == "" {
		cfg.Log = "info"
	}
	if err := cfg.level.UnmarshalText([]byte(cfg.Log)); err != nil {
		return cfg, fmt.Errorf("log %q: want debug, info, warn or error", cfg.Log)
	}
	if cfg.Poll != "" {
		d, err := time.ParseDuration(cfg.Poll)
		if err != nil || d < time.Second {
			return cfg, fmt.Errorf("poll %q: want a duration of at least 1s, such as \"5m\"", cfg.Poll)
		}
		cfg.poll = d
	}
	if cfg.ArchiveDelay != "" {
		d, err := time.ParseDuration(cfg.ArchiveDelay)
		if err != nil || d < time.Second || d > 24*time.Hour {
			return cfg, fmt.Errorf("archive_delay %q: want a duration from 1s to 24h, such as \"10m\"", cfg.ArchiveDelay)
		}
		cfg.archiveDelay = d
	}
	if cfg.UserQuota != nil && *cfg.UserQuota < 0 {
		return cfg, fmt.Errorf("user_quota %d: want bytes, or 0 for unlimited", *cfg.UserQuota)
	}
	if (cfg.MailTLSCert == "") != (cfg.MailTLSKey == "") {
		return cfg, errors.New("mail_tls_cert and mail_tls_key go together: set both, or neither for a self-signed certificate")
	}
	if err := cfg.Gateway.checkJunk(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// gatewayConfig makes this node the community's gateway to the Internet.
type gatewayConfig struct {
	User          string `toml:"user"`
	MX            string `toml:"mx"`
	Hostname      string `toml:"hostname"`
	Smarthost     string `toml:"smarthost"`
	SmarthostUser string `toml:"smarthost_user"`
	SmarthostPass string `toml:"smarthost_password_file"`
	DKIMKey       string `toml:"dkim_key"`
	DKIMSelector  string `toml:"dkim_selector"`
	// JunkFilter is a program run per inbound message (see
	// gateway.CommandFilter); its score adds to the SPF, DKIM and DMARC
	// checks'. JunkThreshold is the total from which a message is junk
	// (absent: the default policy's).
	JunkFilter        commandLine `toml:"junk_filter"`
	JunkFilterTimeout string      `toml:"junk_filter_timeout"`
	JunkThreshold     *float64    `toml:"junk_threshold"`

	// Parsed from JunkFilterTimeout by parseConfig.
	junkTimeout time.Duration
}

// commandLine is a program and its arguments, written in the config as a
// string split at spaces ("spamc -c") or as an array of strings.
type commandLine []string

func (c *commandLine) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		*c = strings.Fields(v)
	case []any:
		*c = nil
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return fmt.Errorf("want a string or an array of strings, got %v", v)
			}
			*c = append(*c, s)
		}
	default:
		return fmt.Errorf("want a string or an array of strings, got %v", v)
	}
	return nil
}

// checkJunk checks the [gateway] junk settings.
func (g *gatewayConfig) checkJunk() error {
	if len(g.JunkFilter) > 0 {
		if _, err := exec.LookPath(g.JunkFilter[0]); err != nil {
			return fmt.Errorf("[gateway] junk_filter: %w", err)
		}
	}
	if g.JunkFilterTimeout != "" {
		d, err := time.ParseDuration(g.JunkFilterTimeout)
		if err != nil || d <= 0 {
			return fmt.Errorf("[gateway] junk_filter_timeout %q: want a duration such as \"10s\"", g.JunkFilterTimeout)
		}
		g.junkTimeout = d
	}
	if t := g.JunkThreshold; t != nil && (!(*t > 0) || math.IsInf(*t, 0)) {
		return fmt.Errorf("[gateway] junk_threshold %v: want a score above 0", *t)
	}
	return nil
}

// junk is the MX's junk policy and filter.
func (g gatewayConfig) junk() (gateway.JunkPolicy, gateway.Filter) {
	p := gateway.DefaultJunkPolicy()
	if g.JunkThreshold != nil {
		p.Threshold = *g.JunkThreshold
	}
	if len(g.JunkFilter) == 0 {
		return p, nil
	}
	return p, &gateway.CommandFilter{Argv: g.JunkFilter, Timeout: g.junkTimeout}
}

const configTemplate = `# epost node configuration (TOML). Start the node with:
#     epost node --config %[1]s

# The data directory: the community's CA certificate (ca/ca.pub), this
# node's key and certificate (nodes/NAME/, from ` + "`epost ca issue-node`" + `), the
# users' keys (users/ADDRESS/, from ` + "`epost user new`" + ` and ` + "`epost user passwd`" + `),
# and the node's store (store/NAME/).
dir = %[2]q

# This node's name in dir/nodes/.
node = %[3]q

# libp2p listen addresses. Other members reach this node here; open the
# port in a firewall, or rely on libp2p's NAT traversal.
listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]

# The address other members should use, if it differs from what is bound
# (a public IP in front of NAT). Empty: the first bound address.
advertise = ""

# Members to join through (their printed addresses, with /p2p/ID). Empty
# starts a new community ring: do that on the first node only.
bootstrap = [%[4]s]

# Users whose mail this node serves (their keys must be in dir/users/).
users = [%[5]s]

# Each user's storage quota in bytes: the size of the distinct messages in
# their folders (a copy in a second folder counts once). Past it, the
# user's APPEND is refused (NO [OVERQUOTA]) and mail to them through this
# node's SMTP server gets 452 4.2.2 until they make room; mail other nodes
# accepted is still delivered. 0 means unlimited.
user_quota = 1073741824  # 1 GiB

# The community's mail domains.
domains = [%[6]s]

# IMAP and SMTP submission for the users' mail clients. On loopback they
# accept passwords in the clear; elsewhere only after STARTTLS, with a
# self-signed certificate made on first start for this machine's names and
# addresses and kept in dir/store/NAME/mail-tls.crt: give that file to a
# mail client on another device to trust (its key is mail-tls.key).
imap = "127.0.0.1:1143"
smtp = "127.0.0.1:1587"

# A certificate for IMAP and SMTP instead of the self-signed one: its PEM
# chain (leaf first) and key, e.g. from Let's Encrypt for this machine's
# name. Both or neither. A renewed pair is picked up without a restart.
mail_tls_cert = ""
mail_tls_key = ""

# The status page (HTTP); empty turns it off. Keep it on loopback.
status = "127.0.0.1:8025"

# Log level on stderr: debug, info, warn or error; lines as "text" or
# "json" (one object per line, for log collectors).
log = "info"
log_format = "text"

# NAT. libp2p's AutoNAT service and hole punching are on. A member with a
# public address can relay for members behind NAT (relay = true; only
# certified members get a reservation, with limits far above libp2p's
# defaults). A member behind NAT keeps a reservation on such relays, and
# advertises its address through the first, e.g.
#   relays = ["/ip4/198.51.100.7/tcp/4001/p2p/12D3KooW..."]
#   advertise = "/ip4/198.51.100.7/tcp/4001/p2p/12D3KooW.../p2p-circuit"
relay = false
relays = []

# About how many nodes the community has (the same on every node). It
# sizes the archive's erasure code: fragments spread over distinct nodes
# from 256 nodes on, balanced over all nodes below. 0 means 1000.
community = 0

# How often the node reads each user's pending mail in full, in case a
# notification was lost (node down, network partition): a Go duration such
# as "5m". Empty means 5m.
poll = ""

# How long acknowledged mail waits, at most, before this node seals it
# into the erasure-coded archive (until then it has only its PAST
# replicas): a Go duration such as "10m". Shorter means smaller bundles,
# which the node merges later. Empty means 10m.
archive_delay = ""

# The community's gateway users (the same list on every node): mail they
# bring in from the Internet may carry any From without being flagged.
gateways = []

# Uncomment on the one node that is the community's gateway to the
# Internet. Its user (listed in users above and in gateways) receives
# mail for the domains on the MX address and injects it; members' mail to
# outside addresses leaves through it, DKIM-signed, via the smarthost or
# straight to the recipients' mail servers. ` + "`epost gateway dns`" + ` prints the DNS
# records to publish.
# [gateway]
# user = "gateway@example.org"
# mx = "0.0.0.0:25"
# hostname = "mx.example.org"
# smarthost = ""                  # host:port; empty delivers directly
# smarthost_user = ""
# smarthost_password_file = ""
# dkim_key = ""                   # PEM private key (Ed25519 or RSA); empty sends unsigned
# dkim_selector = "epost"
# Inbound mail scoring at least junk_threshold is filed into Junk. The
# score adds up failed checks (SPF fail 3, softfail 1, a broken DKIM
# signature 3, DMARC fail 3, or 5 under a quarantine or reject policy)
# and, when junk_filter names a program (no shell; a string split at
# spaces, or an array), its score: it gets the message on standard input
# and prints a number (such as 4.5, or 5.3/5.0 as spamc -c does) and
# exits 0. A filter that fails, prints no number or outlives
# junk_filter_timeout adds nothing, and is logged.
# junk_threshold = 5
# junk_filter = ""                # e.g. ["sh", "-c", "spamc -c || true"] (spamc exits 1 for spam)
# junk_filter_timeout = "10s"
`

// cmdInit writes a commented configuration file.
func cmdInit(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("init", "[--dir DIR] --node NAME [--bootstrap ADDR]... [--user ADDRESS]... [--out FILE]", stderr)
	dir := flags.String("dir", defaultDataDir, "data directory")
	name := flags.String("node", "", "this node's name (as given to epost ca issue-node --name)")
	out := flags.String("out", "epost.toml", "file to write (- for standard output)")
	var boots, users multiFlag
	flags.Var(&boots, "bootstrap", "a member's address to join through (repeatable)")
	flags.Var(&users, "user", "a user this node serves (repeatable)")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *name == "" {
		flags.Usage()
		return fmt.Errorf("%w: init: --node NAME is required", errUsage)
	}
	domains := map[string]bool{}
	var doms []string
	for _, u := range users {
		addr, err := identity.CanonicalAddress(u)
		if err != nil {
			return err
		}
		if d := addr[strings.IndexByte(addr, '@')+1:]; !domains[d] {
			domains[d] = true
			doms = append(doms, d)
		}
	}
	text := fmt.Sprintf(configTemplate, *out, *dir, *name, quoteList(boots), quoteList(users), quoteList(doms))
	if *out == "-" {
		_, err := io.WriteString(stdout, text)
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("init: %w (remove it first to write a new one)", err)
	}
	if _, err := io.WriteString(f, text); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s; start the node with: epost node --config %s\n", *out, *out)
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}

// cmdNode runs one node until SIGINT or SIGTERM.
func cmdNode(args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runNode(ctx, args, stdout, stderr)
}

// nodeAuth checks passwords against the users' hash files.
type nodeAuth map[string]string

func (a nodeAuth) Check(username, password string) (string, bool) {
	addr, err := identity.CanonicalAddress(username)
	if err != nil {
		return "", false
	}
	h, ok := a[addr]
	if !ok || !checkPassword(h, password) {
		return "", false
	}
	return addr, true
}

// runNode is `epost node` until ctx ends.
func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("node", "--config FILE", stderr)
	file := flags.String("config", "epost.toml", "configuration file (epost init writes one)")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		flags.Usage()
		return fmt.Errorf("%w: node: unexpected argument %q", errUsage, pos[0])
	}
	data, err := os.ReadFile(*file)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	cfg, err := parseConfig(data)
	if err != nil {
		return fmt.Errorf("node: %s: %w", *file, err)
	}
	log, err := newLogger(stderr, cfg.level, cfg.LogFormat)
	if err != nil {
		return fmt.Errorf("node: %s: %w", *file, err)
	}
	caPub, err := identity.ReadCAPublic(cfg.Dir)
	if err != nil {
		return fmt.Errorf("node: %w (is %s a data directory made by `epost ca init`?)", err, cfg.Dir)
	}
	v, err := dirVerifier(cfg.Dir, caPub)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	key, cert, err := identity.ReadNode(cfg.Dir, cfg.Node, v)
	if err != nil {
		return fmt.Errorf("node: %w (issue it with `epost ca issue-node --name %s`)", err, cfg.Node)
	}
	type served struct {
		keys   identity.UserKeys
		cert   *identity.UserCert
		backup []byte
	}
	var users []served
	auth := nodeAuth{}
	for _, u := range cfg.Users {
		keys, ucert, err := identity.ReadUser(cfg.Dir, u, v)
		if err != nil {
			return fmt.Errorf("node: user %s: %w", u, err)
		}
		ud, _ := identity.UserDir(cfg.Dir, keys.Address)
		h, err := os.ReadFile(filepath.Join(ud, PasswordFile))
		if err != nil {
			return fmt.Errorf("node: user %s has no password: run `epost user passwd --dir %s --password-file FILE %s`", u, cfg.Dir, u)
		}
		auth[keys.Address] = strings.TrimSpace(string(h))
		b, _ := os.ReadFile(filepath.Join(ud, identity.UserBackupFile))
		users = append(users, served{keys, ucert, b})
	}
	nc := node.DefaultConfig()
	if len(cfg.Listen) > 0 {
		nc.ListenAddrs = cfg.Listen
	}
	nc.Advertise = cfg.Advertise
	nc.Key, nc.Cert, nc.CA = key, cert, caPub
	for _, b := range cfg.Bootstrap {
		nc.Bootstrap = append(nc.Bootstrap, env.Addr(b))
	}
	nc.DataDir = filepath.Join(cfg.Dir, "store", cfg.Node)
	nc.Community = cfg.Community
	nc.ArchiveDelay = env.Duration(cfg.archiveDelay.Microseconds())
	if rev := v.Revocation(); rev != nil {
		nc.Revocation = rev.Bytes()
	}
	nc.RelayService, nc.Relays = cfg.Relay, cfg.Relays
	nc.Libp2p = append(nc.Libp2p, libp2p.EnableNATService(), libp2p.EnableHolePunching())
	nc.Log = log
	nc.Post = post.DefaultConfig()
	nc.Post.Gateways = cfg.Gateways
	if cfg.UserQuota != nil {
		nc.Post.Quota = *cfg.UserQuota
	}
	if cfg.poll != 0 {
		nc.Post.PollPeriod = env.Duration(cfg.poll.Microseconds())
	}
	var faults *transport.Faults
	if os.Getenv(faultsEnv) == "1" {
		if cfg.Status == "" {
			return fmt.Errorf("node: %s=1 needs the status page (status in %s) to serve the fault switch", faultsEnv, *file)
		}
		faults = &transport.Faults{}
		nc.Faults = faults
		log.Warn("fault injection enabled: test-only, anyone reaching the status page can cut links and move the clock", "env", faultsEnv)
	}
	n, err := node.New(nc)
	if err != nil {
		return fmt.Errorf("node: %w (is the port in use?)", err)
	}
	defer n.Close()
	if err := n.Start(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "node %s at %s\n", n.ID().Short(), n.Addr())
	warnAt := time.Now().Add(time.Minute)
	for !n.Active() {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
		if len(nc.Bootstrap) > 0 && time.Now().After(warnAt) {
			warnAt = time.Now().Add(5 * time.Minute)
			fmt.Fprintf(stderr, "epost node: not joined yet through %s: check that those nodes run and that this machine reaches their addresses (firewall, NAT); still trying\n", nc.Bootstrap[0])
		}
	}
	fmt.Fprintln(stdout, "joined the ring")
	// A revocation the CA's holder writes into the data directory is
	// adopted within a minute, and spreads from here to every peer.
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Minute):
			}
			r, err := identity.ReadRevocation(cfg.Dir, identity.NewVerifier(caPub))
			if err != nil || r == nil {
				continue
			}
			if ok, err := n.AdoptRevocation(r.Bytes()); err != nil {
				log.Warn("revocation list in the data directory refused", "err", err)
			} else if ok {
				log.Info("adopted the revocation list in the data directory", "epoch", r.Epoch)
			}
		}
	}()
	for _, u := range users {
		ready := make(chan error, 1)
		if err := n.Do(func() {
			a, err := n.Mail().AddUser(u.keys, u.cert, func(e error) { ready <- e })
			if err != nil {
				ready <- err
				return
			}
			if len(u.backup) > 0 {
				a.PublishKeyBackup(u.backup, func(err error) {
					if err != nil {
						log.Warn("publishing the key backup failed", "user", u.keys.Address, "err", err)
					}
				})
			}
		}); err != nil {
			return err
		}
		select {
		case err := <-ready:
			if err != nil {
				return fmt.Errorf("node: mailbox of %s: %w", u.keys.Address, err)
			}
		case <-ctx.Done():
			return nil
		}
		fmt.Fprintf(stdout, "serving %s\n", u.keys.Address)
	}
	var closers []func() error
	defer func() {
		for _, f := range closers {
			f()
		}
	}()
	var tlsCfg *tls.Config
	var tlsPath, tlsSum string
	if cfg.MailTLSCert != "" {
		tlsPath = cfg.MailTLSCert
		tlsCfg, tlsSum, err = givenMailTLS(cfg.MailTLSCert, cfg.MailTLSKey, log)
	} else {
		tlsCfg, tlsPath, tlsSum, err = mailTLS(nc.DataDir, cfg.IMAP, cfg.SMTP)
	}
	if err != nil {
		return err
	}
	if cfg.IMAP != "" || cfg.SMTP != "" {
		fmt.Fprintf(stdout, "mail TLS certificate %s (SHA-256 %s)\n", tlsPath, tlsSum)
	}
	if cfg.IMAP != "" {
		ln, err := net.Listen("tcp", cfg.IMAP)
		if err != nil {
			return fmt.Errorf("node: IMAP on %s: %w", cfg.IMAP, err)
		}
		s := imapd.New(imapd.Config{Loop: n, Mail: n.Mail, Auth: auth, TLS: tlsCfg, InsecureAuth: mailnet.IsLoopback(cfg.IMAP), Log: log})
		n.AddCounters("imap", func() any { return s.Stats() })
		closers = append(closers, s.Close)
		go func() { _ = s.Serve(ln) }()
		fmt.Fprintf(stdout, "IMAP on %s\n", ln.Addr())
	}
	var outbound smtpd.Outbound
	if cfg.Gateway.User != "" {
		gw, ob, err := startGateway(cfg, n, tlsCfg, log)
		if err != nil {
			return err
		}
		outbound = ob
		if gw != nil {
			closers = append(closers, gw.Close)
			fmt.Fprintf(stdout, "MX on %s\n", gw.Addr())
		}
	}
	if cfg.SMTP != "" {
		ln, err := net.Listen("tcp", cfg.SMTP)
		if err != nil {
			return fmt.Errorf("node: SMTP on %s: %w", cfg.SMTP, err)
		}
		s := smtpd.New(smtpd.Config{Loop: n, Mail: n.Mail, Auth: auth, Domains: cfg.Domains, Outbound: outbound, TLS: tlsCfg, Hostname: "localhost", Log: log})
		n.AddCounters("smtp", func() any { return s.Stats() })
		closers = append(closers, s.Close)
		go func() { _ = s.Serve(ln) }()
		fmt.Fprintf(stdout, "SMTP on %s\n", ln.Addr())
	}
	if cfg.Status != "" {
		ln, err := net.Listen("tcp", cfg.Status)
		if err != nil {
			return fmt.Errorf("node: status page on %s: %w", cfg.Status, err)
		}
		var h http.Handler = node.StatusHandler("epost node "+cfg.Node, func() []*node.Node { return []*node.Node{n} })
		if faults != nil {
			h = faultsHandler(faults, n, h)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		closers = append(closers, srv.Close)
		go func() { _ = srv.Serve(ln) }()
		fmt.Fprintf(stdout, "status page: http://%s/\n", ln.Addr())
	}
	fmt.Fprintln(stdout, "ready")
	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping")
	return nil
}

// faultsEnv, set to 1 in `epost node`'s environment, turns on fault
// injection: FOR TESTS ONLY (the multi-process soak test drives it). The
// status page then also serves
//
//	POST /debug/faults/block?peer=ADDR  cut the links to the peer at ADDR
//	                                    (a multiaddr ending in /p2p/ID;
//	                                    repeat peer= for several)
//	POST /debug/faults/heal             restore every link
//	POST /debug/faults/clock?jump=D     move the node's wall clock by the
//	                                    duration D (such as 17520h or -1h)
//
// without authentication, wired to node.Config.Faults (see
// transport.Faults). It is off unless the variable is exactly 1, and never
// belongs in a deployment.
const faultsEnv = "EPOST_FAULTS"

// faultsHandler serves the test-only fault switch beside next.
func faultsHandler(f *transport.Faults, n *node.Node, next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", next)
	mux.HandleFunc("POST /debug/faults/block", func(w http.ResponseWriter, r *http.Request) {
		peers := r.URL.Query()["peer"]
		for _, p := range peers {
			if !strings.Contains(p, "/p2p/") {
				http.Error(w, "peer must end in /p2p/ID: "+p, http.StatusBadRequest)
				return
			}
		}
		for _, p := range peers {
			f.Block(env.Addr(p))
		}
		fmt.Fprintf(w, "blocked %d\n", len(peers))
	})
	mux.HandleFunc("POST /debug/faults/heal", func(w http.ResponseWriter, _ *http.Request) {
		f.UnblockAll()
		fmt.Fprintln(w, "healed")
	})
	mux.HandleFunc("POST /debug/faults/clock", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("jump"))
		if err != nil {
			http.Error(w, "jump must be a duration such as 17520h: "+err.Error(), http.StatusBadRequest)
			return
		}
		n.JumpWallClock(d)
		fmt.Fprintf(w, "wall clock moved by %v\n", d)
	})
	return mux
}
