package smtpd

import (
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
	"github.com/epost-mail/epost/internal/post"
)

// Loop runs functions on the node's event loop, the one goroutine that
// owns POST. Do runs f there and waits for it to return;
// *node.Node satisfies it.
type Loop interface {
	Do(f func()) error
}

// Auth checks a user's SMTP credentials. It is called from SMTP
// connection goroutines, concurrently, never on the event loop. It
// returns the user's canonical mail address when the password is right.
type Auth interface {
	Check(username, password string) (address string, ok bool)
}

// Outbound hands mail for recipients outside the community to a gateway
// (the gateway node's relay or a smarthost). Relay is called from an SMTP
// connection goroutine and must return nil only once the gateway has
// taken responsibility for the message; an *smtp.SMTPError it returns is
// passed to the client as is, any other error becomes a 451.
//
// Relay runs after POST has stored the message for the community's
// recipients, so a retry after a gateway failure costs the community
// nothing (POST deduplicates it). A client that lost the 250 retries,
// though, and Relay then sees the same message twice: a gateway should
// deduplicate (by sender, recipients and bytes, as POST does).
type Outbound interface {
	Relay(from string, to []string, msg []byte) error
}

// Config is what a Server needs. Without Loop and Mail every message gets
// a 451, without Auth nobody can send; the zero value of everything else
// takes the default named next to it.
type Config struct {
	// Loop runs POST calls on the node's event loop.
	Loop Loop
	// Mail returns the node's POST instance (nil while it has none). It is
	// called on the loop only.
	Mail func() *post.Post
	// Auth checks credentials. Nil: nobody can authenticate, so nobody
	// can send.
	Auth Auth
	// Domains are the community's mail domains: recipients in them are
	// delivered by POST (and must be members), others go to Outbound.
	// Empty: the authenticated user's own domain.
	Domains []string
	// Outbound takes mail for recipients outside the community. Nil:
	// such recipients are refused ("relay not configured").
	Outbound Outbound
	// Hostname is the name the server greets with. Default "localhost".
	Hostname string
	// TLS, when set, offers STARTTLS. Without it AUTH works on loopback
	// connections only.
	TLS *tls.Config
	// MaxMessageBytes bounds a message (SIZE). Default 25 MiB.
	MaxMessageBytes int64
	// MaxRecipients bounds a transaction's recipients. Default 100, at
	// most post.MaxRecipients.
	MaxRecipients int
	// MaxConnections bounds open connections, MaxConnectionsPerIP those
	// from one remote address (an IPv6 /64); a connection beyond either
	// is answered 421 and closed. Defaults 100 and 20.
	MaxConnections, MaxConnectionsPerIP int
	// ReadTimeout and WriteTimeout bound each command read and reply
	// write. Defaults 5 min (RFC 5321 section 4.5.3.2.7) and 1 min.
	ReadTimeout, WriteTimeout time.Duration
	// LookupTimeout bounds a RCPT's membership check. Default 30 s.
	LookupTimeout time.Duration
	// SendTimeout bounds the wait for POST to store a message durably;
	// past it the client gets a 451 and retries. Default 2 min.
	SendTimeout time.Duration
	// AuthLimit tunes the AUTH brute-force limiter. Zero fields take
	// DefaultAuthLimit's.
	AuthLimit AuthLimit
	// SendLimit bounds each user's recipients per minute. Zero fields
	// take DefaultSendLimit's.
	SendLimit SendLimit
	// Now is the limiters' clock. Default time.Now.
	Now func() time.Time
	// Log gets a line per refused login and per accepted message. Nil
	// discards.
	Log *slog.Logger
}

// DefaultMaxMessageBytes is the default message size limit.
const DefaultMaxMessageBytes = 25 << 20

// DefaultMaxRecipients is the default limit on a message's recipients.
const DefaultMaxRecipients = 100

func (c Config) withDefaults() Config {
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxRecipients <= 0 {
		c.MaxRecipients = DefaultMaxRecipients
	}
	c.MaxRecipients = min(c.MaxRecipients, post.MaxRecipients)
	if c.MaxConnections <= 0 {
		c.MaxConnections = 100
	}
	if c.MaxConnectionsPerIP <= 0 {
		c.MaxConnectionsPerIP = 20
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
	if c.SendTimeout <= 0 {
		c.SendTimeout = 2 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = env.Discard
	}
	domains := make([]string, 0, len(c.Domains))
	for _, d := range c.Domains {
		domains = append(domains, strings.ToLower(strings.TrimSpace(d)))
	}
	c.Domains = domains
	return c
}

// Stats counts a server's work; the node's status page and metrics show
// it (node.AddCounters).
type Stats struct {
	Accepted     uint64 // messages answered 250
	TempFailed   uint64 // messages answered 4xx after DATA
	Refused      uint64 // MAIL, RCPT or DATA answered 5xx
	AuthOK       uint64 // successful logins
	AuthFailed   uint64 // wrong credentials
	AuthLocked   uint64 // AUTH refused because the address was locked out
	RateLimited  uint64 // messages answered 451 for exceeding SendLimit
	LookupFailed uint64 // RCPT answered 4xx: membership could not be checked
	OverQuota    uint64 // RCPT answered 452: the recipient's mailbox is full

	// Refusals of hostile or broken clients, each also counted above
	// where it falls under Refused.
	RelayRefused uint64 // MAIL without AUTH (530), as someone else (553), RCPT outside without Outbound (550)
	TooLarge     uint64 // DATA over MaxMessageBytes (552; a too large SIZE= at MAIL is go-smtp's and not counted)
	TimedOut     uint64 // connections closed because a read took longer than ReadTimeout
	ConnRefused  uint64 // connections answered 421 for exceeding MaxConnections or MaxConnectionsPerIP
}

type counters struct {
	accepted, tempFailed, refused, authOK, authFailed, authLocked, lookupFailed, rateLimited, overQuota atomic.Uint64
	relayRefused, tooLarge, timedOut, connRefused                                                       atomic.Uint64
}

// mailer is what the server uses of POST; *post.Post is one, and unit
// tests substitute a fake.
type mailer interface {
	Send(from string, recipients []string, msg []byte, done func(error))
	LookupUser(addr string, done func(bool, error))
	CheckQuota(addr string, size int64) error
}

var _ mailer = (*post.Post)(nil)

// Server is an SMTP submission server for one node's users.
type Server struct {
	cfg     Config
	mail    func() mailer // called on the loop only
	smtp    *smtp.Server
	limiter *authLimiter
	senders *sendLimiter
	stats   counters

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
		cfg:     cfg,
		mail:    mail,
		limiter: newAuthLimiter(cfg.AuthLimit, cfg.Now),
		senders: newSendLimiter(cfg.SendLimit, cfg.Now),
		closed:  make(chan struct{}),
	}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = cfg.Hostname
	srv.TLSConfig = cfg.TLS
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = cfg.MaxRecipients
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = cfg.WriteTimeout
	srv.EnableSMTPUTF8 = true
	// go-smtp's switch is server-wide; the session decides per connection
	// (TLS or loopback) in AuthMechanisms and Auth.
	srv.AllowInsecureAuth = true
	srv.ErrorLog = logPrinter{cfg.Log}
	s.smtp = srv
	return s
}

// Serve accepts SMTP connections on ln until Close. For implicit TLS,
// pass a tls.NewListener.
func (s *Server) Serve(ln net.Listener) error {
	err := s.smtp.Serve(newConnLimiter(ln, s.cfg.MaxConnections, s.cfg.MaxConnectionsPerIP, &s.stats))
	select {
	case <-s.closed:
		return nil
	default:
		return err
	}
}

// Close stops the server: its listeners and connections close at once,
// and sessions waiting for POST give up (their messages were not
// acknowledged, so their clients will retry).
func (s *Server) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return s.smtp.Close()
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Accepted: c.accepted.Load(), TempFailed: c.tempFailed.Load(), Refused: c.refused.Load(),
		AuthOK: c.authOK.Load(), AuthFailed: c.authFailed.Load(), AuthLocked: c.authLocked.Load(),
		LookupFailed: c.lookupFailed.Load(), RateLimited: c.rateLimited.Load(), OverQuota: c.overQuota.Load(),
		RelayRefused: c.relayRefused.Load(), TooLarge: c.tooLarge.Load(), TimedOut: c.timedOut.Load(),
		ConnRefused: c.connRefused.Load(),
	}
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	remote := c.Conn().RemoteAddr()
	return &session{s: s, conn: c, remote: limiterKey(remote), loopback: isLoopback(remote)}, nil
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

// overQuota reports whether a message of size bytes would take addr, if
// this node serves it, past its quota. A failure to ask counts as room:
// the membership check just before succeeded, and delivery is not
// refused for quota anyway.
func (s *Server) overQuota(addr string, size int64) bool {
	_, err := await(s, s.cfg.LookupTimeout, func(m mailer, done func(struct{}, error)) {
		done(struct{}{}, m.CheckQuota(addr, size))
	})
	return errors.Is(err, post.ErrOverQuota)
}

// send has POST store msg durably, one notification per group of
// recipients (see mailnet.RecipientGroups); it returns nil once every group is
// stored, else the first error.
func (s *Server) send(from string, groups [][]string, msg []byte) error {
	_, err := await(s, s.cfg.SendTimeout, func(m mailer, done func(struct{}, error)) {
		n := len(groups)
		var first error
		for _, g := range groups {
			m.Send(from, g, msg, func(err error) {
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

// logPrinter passes go-smtp's internal error log to slog.
type logPrinter struct{ l *slog.Logger }

func (p logPrinter) Printf(format string, v ...any) { p.l.Warn("smtpd: " + fmt.Sprintf(format, v...)) }
func (p logPrinter) Println(v ...any)               { p.l.Warn("smtpd: " + strings.TrimSpace(fmt.Sprintln(v...))) }
