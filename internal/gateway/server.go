package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/epost-mail/epost/internal/mailnet"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/post"
)

// Loop runs functions on the node's event loop, the one goroutine that
// owns POST. Do runs f there and waits for it to return; *node.Node
// satisfies it.
type Loop interface {
	Do(f func()) error
}

// Config is what a Server needs. Without Loop, Mail and Gateway every
// message gets a 451; without Domains every recipient is refused; the
// zero value of everything else takes the default named next to it.
type Config struct {
	// Loop runs POST calls on the node's event loop.
	Loop Loop
	// Mail returns the node's POST instance (nil while it has none). It is
	// called on the loop only.
	Mail func() *post.Post
	// Gateway is the gateway's own user, served by this node, as whom
	// Internet mail is injected. It must be listed in every node's
	// post.Config.Gateways, or recipients flag its mail $Phishing.
	Gateway string
	// Domains are the community's mail domains, the only ones this MX
	// accepts mail for.
	Domains []string
	// Hostname is the name the server greets with and the authserv-id of
	// its Authentication-Results. Default "localhost".
	Hostname string
	// TLS, when set, offers STARTTLS (RFC 3207) to sending MTAs.
	TLS *tls.Config
	// Resolver answers the checks' DNS queries. Default
	// net.DefaultResolver.
	Resolver Resolver
	// Junk weighs the checks into a junk score. Zero: DefaultJunkPolicy.
	Junk JunkPolicy
	// Filter, when set, adds its score to the checks'.
	Filter Filter
	// MaxMessageBytes bounds a message (SIZE). Default 25 MiB.
	MaxMessageBytes int64
	// MaxRecipients bounds a transaction's recipients. Default 100, at
	// most post.MaxRecipients.
	MaxRecipients int
	// MaxConnections bounds open connections, MaxConnectionsPerIP those
	// from one client address (an IPv6 /64). Defaults 200 and 10.
	MaxConnections, MaxConnectionsPerIP int
	// ConnectionRate bounds new connections per client address. Default
	// 60 a minute, bursts of 30.
	ConnectionRate Rate
	// MessageRate bounds messages (transactions reaching DATA) per client
	// address. Default 60 a minute, bursts of 100.
	MessageRate Rate
	// ReadTimeout and WriteTimeout bound each command read and reply
	// write. Defaults 5 min (RFC 5321 section 4.5.3.2.7) and 1 min.
	ReadTimeout, WriteTimeout time.Duration
	// LookupTimeout bounds a RCPT's membership check. Default 30 s.
	LookupTimeout time.Duration
	// CheckTimeout bounds a message's SPF, DKIM and DMARC checks.
	// Default 30 s.
	CheckTimeout time.Duration
	// InjectTimeout bounds the wait for POST to store a message durably.
	// Default 2 min.
	InjectTimeout time.Duration
	// Now is the limiters' clock. Default time.Now.
	Now func() time.Time
	// Log gets a line per refused and per accepted message. Nil discards.
	Log *slog.Logger
}

// DefaultMaxMessageBytes is the default message size limit.
const DefaultMaxMessageBytes = 25 << 20

func (c Config) withDefaults() Config {
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	c.Junk = c.Junk.withDefaults()
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxRecipients <= 0 {
		c.MaxRecipients = 100
	}
	c.MaxRecipients = min(c.MaxRecipients, post.MaxRecipients)
	if c.MaxConnections <= 0 {
		c.MaxConnections = 200
	}
	if c.MaxConnectionsPerIP <= 0 {
		c.MaxConnectionsPerIP = 10
	}
	if c.ConnectionRate.PerMinute <= 0 || c.ConnectionRate.Burst < 1 {
		c.ConnectionRate = Rate{PerMinute: 60, Burst: 30}
	}
	if c.MessageRate.PerMinute <= 0 || c.MessageRate.Burst < 1 {
		c.MessageRate = Rate{PerMinute: 60, Burst: 100}
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 5 * time.Minute
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = time.Minute
	}
	if c.LookupTimeout <= 0 {
		c.LookupTimeout = 30 * time.Second
	}
	if c.CheckTimeout <= 0 {
		c.CheckTimeout = 30 * time.Second
	}
	if c.InjectTimeout <= 0 {
		c.InjectTimeout = 2 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = env.Discard
	}
	domains := make([]string, 0, len(c.Domains))
	for _, d := range c.Domains {
		domains = append(domains, strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), ".")))
	}
	c.Domains = domains
	if gw, err := identity.CanonicalAddress(c.Gateway); err == nil {
		c.Gateway = gw
	}
	return c
}

// Stats counts a server's work.
type Stats struct {
	Accepted     uint64 // messages answered 250
	Junk         uint64 // of which marked as junk
	TempFailed   uint64 // messages answered 4xx after DATA
	Refused      uint64 // RCPT or DATA answered 5xx (relay attempts, unknown users, too big)
	RateLimited  uint64 // connections and messages refused for exceeding a rate
	LookupFailed uint64 // RCPT answered 4xx: membership could not be checked

	// Refusals of hostile or broken clients, each also counted above.
	RelayRefused uint64 // RCPT outside the community's domains (550 5.7.1)
	TooLarge     uint64 // DATA over MaxMessageBytes (552; a too large SIZE= at MAIL is go-smtp's and not counted)
	TimedOut     uint64 // connections closed because a read took longer than ReadTimeout
}

type counters struct {
	accepted, junk, tempFailed, refused, rateLimited, lookupFailed atomic.Uint64
	relayRefused, tooLarge, timedOut                               atomic.Uint64
}

// mailer is what the server uses of POST; *post.Post is one, and unit
// tests substitute a fake.
type mailer interface {
	Inject(gw string, recipients []string, msg []byte, done func(error))
	LookupUser(addr string, done func(bool, error))
}

var _ mailer = (*post.Post)(nil)

// Server is the community's inbound MX.
type Server struct {
	cfg      Config
	mail     func() mailer // called on the loop only
	smtp     *smtp.Server
	messages *rateLimiter
	conns    *rateLimiter
	stats    counters

	mu        sync.Mutex
	listeners []net.Listener
	closeOnce sync.Once
	closed    chan struct{}
}

// New makes a server; Serve starts it.
func New(cfg Config) *Server {
	get := cfg.Mail
	return newServer(cfg, func() mailer {
		if get == nil {
			return nil
		}
		if p := get(); p != nil {
			return p
		}
		return nil
	})
}

func newServer(cfg Config, mail func() mailer) *Server {
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:      cfg,
		mail:     mail,
		messages: newRateLimiter(cfg.MessageRate, cfg.Now),
		conns:    newRateLimiter(cfg.ConnectionRate, cfg.Now),
		closed:   make(chan struct{}),
	}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = cfg.Hostname
	srv.TLSConfig = cfg.TLS
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = cfg.MaxRecipients
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = cfg.WriteTimeout
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = logPrinter{cfg.Log}
	s.smtp = srv
	return s
}

// Serve accepts SMTP connections on ln until Close. Close may come
// before Serve: Serve then returns at once.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	select {
	case <-s.closed:
		s.mu.Unlock()
		ln.Close()
		return nil
	default:
	}
	// go-smtp closes only the listeners its Serve has registered, which
	// races with a Close right after "go Serve": the server closes its
	// own.
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	err := s.smtp.Serve(&connLimiter{
		Listener: ln, total: s.cfg.MaxConnections, perIP: s.cfg.MaxConnectionsPerIP,
		rate: s.conns, rejected: func() { s.stats.rateLimited.Add(1) }, timedOut: func() { s.stats.timedOut.Add(1) }, byKey: map[string]int{},
	})
	select {
	case <-s.closed:
		return nil
	default:
		return err
	}
}

// Close stops the server: its listeners and connections close at once,
// and sessions waiting for POST give up (their messages were not
// acknowledged, so the sending MTAs retry).
func (s *Server) Close() error {
	s.mu.Lock()
	s.closeOnce.Do(func() { close(s.closed) })
	lns := s.listeners
	s.listeners = nil
	s.mu.Unlock()
	err := s.smtp.Close()
	for _, ln := range lns {
		ln.Close()
	}
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	return err
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Accepted: c.accepted.Load(), Junk: c.junk.Load(), TempFailed: c.tempFailed.Load(),
		Refused: c.refused.Load(), RateLimited: c.rateLimited.Load(), LookupFailed: c.lookupFailed.Load(),
		RelayRefused: c.relayRefused.Load(), TooLarge: c.tooLarge.Load(), TimedOut: c.timedOut.Load(),
	}
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	remote := c.Conn().RemoteAddr()
	return &session{s: s, conn: c, key: limiterKey(remote), ip: addrIP(remote)}, nil
}

// Errors of waiting for POST.
var (
	errUnavailable = mailnet.ErrUnavailable
	errTimeout     = mailnet.ErrTimeout
)

// await starts a POST call on the loop and waits, on this goroutine, for
// its callback, at most timeout.
func await[T any](s *Server, timeout time.Duration, start func(m mailer, done func(T, error))) (T, error) {
	var loop mailnet.Loop
	if s.cfg.Loop != nil {
		loop = s.cfg.Loop
	}
	return mailnet.Await(loop, timeout, s.closed, func(done func(T, error)) bool {
		m := s.mail()
		if m == nil {
			return false
		}
		start(m, done)
		return true
	})
}

// lookupUser asks POST whether addr is a community member.
func (s *Server) lookupUser(addr string) (bool, error) {
	return await(s, s.cfg.LookupTimeout, func(m mailer, done func(bool, error)) {
		m.LookupUser(addr, done)
	})
}

// inject has POST store msg durably for each group of recipients; nil
// once every group is stored, else the first error.
func (s *Server) inject(groups [][]string, msg []byte) error {
	if s.cfg.Gateway == "" {
		return fmt.Errorf("%w: no gateway user configured", errUnavailable)
	}
	_, err := await(s, s.cfg.InjectTimeout, func(m mailer, done func(struct{}, error)) {
		n := len(groups)
		var first error
		for _, g := range groups {
			m.Inject(s.cfg.Gateway, g, msg, func(err error) {
				if err != nil && first == nil {
					first = err
				}
				if n--; n == 0 {
					done(struct{}{}, first)
				}
			})
		}
	})
	return err
}

// Inject stores msg for community recipients as the gateway user, as
// the MX does for Internet mail, and returns once it is durable (nil) or
// has failed. It is for mail the gateway itself writes, such as
// DirectMX's bounces (DirectMX.Bounce). Call it from any goroutine but the
// node's loop.
func (s *Server) Inject(rcpts []string, msg []byte) error {
	if len(rcpts) == 0 {
		return errors.New("gateway: inject: no recipients")
	}
	return s.inject([][]string{rcpts}, msg)
}

// checks runs the inbound checks, bounded by CheckTimeout and by Close.
func (s *Server) checks(env Envelope, msg []byte) (Verdict, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CheckTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	return Check(ctx, s.cfg.Resolver, env, msg)
}

// logPrinter passes go-smtp's internal error log to slog.
type logPrinter struct{ l *slog.Logger }

func (p logPrinter) Printf(format string, v ...any) {
	p.l.Warn("gateway: " + fmt.Sprintf(format, v...))
}
func (p logPrinter) Println(v ...any) {
	p.l.Warn("gateway: " + strings.TrimSpace(fmt.Sprintln(v...)))
}
