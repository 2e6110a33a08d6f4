package imapd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/epost-mail/epost/internal/post"
	"github.com/epost-mail/epost/internal/store/object"
)

// Loop runs funcs on the node's event loop, where POST lives.
// internal/node.Node satisfies it.
type Loop interface {
	// Do runs f on the loop and returns once it has run, or an error if
	// the loop has stopped.
	Do(f func()) error
}

// Auth checks a user's password.
type Auth interface {
	// Check returns the mail address the credentials belong to.
	Check(username, password string) (address string, ok bool)
}

// Config is what a Server needs.
type Config struct {
	// Loop is the node's event loop; Mail is called only on it.
	Loop Loop
	// Mail returns the node's POST instance (nil if the node has none).
	Mail func() *post.Post
	// Auth checks LOGIN and AUTHENTICATE PLAIN credentials.
	Auth Auth
	// TLS, if set, enables STARTTLS (RFC 9051 section 6.2.1).
	TLS *tls.Config
	// InsecureAuth allows authentication without TLS: for loopback only.
	InsecureAuth bool
	// Timeout bounds how long a command waits for POST (a network write or
	// read); zero uses DefaultTimeout.
	Timeout time.Duration
	// AppendLimit is the largest message APPEND accepts; zero uses
	// DefaultAppendLimit.
	AppendLimit uint32
	// AuthLimit tunes the LOGIN/AUTHENTICATE brute-force limiter. Zero
	// fields take DefaultAuthLimit's.
	AuthLimit AuthLimit
	// MaxConnections bounds open connections, MaxConnectionsPerIP those
	// from one remote address (an IPv6 /64); a connection beyond either
	// gets a BYE and is closed. Defaults 200 and 50 (mail clients open
	// several connections per account, and a node's clients usually share
	// its loopback address).
	MaxConnections, MaxConnectionsPerIP int
	// LoginTimeout is how long a client that has not logged in may stay
	// silent before the server hangs up (an autologout, RFC 9051 section
	// 5.4). Default 30 s.
	LoginTimeout time.Duration
	// IdleTimeout is the same after login, in IDLE too; RFC 9051 section
	// 5.4 asks for at least 30 min. Default 35 min.
	IdleTimeout time.Duration
	// Now is the login limiter's clock. Default time.Now.
	Now func() time.Time
	// Log receives the server's errors; nil discards them.
	Log *slog.Logger
	// Debug, if set, receives the raw protocol traffic (passwords
	// included: tests only).
	Debug io.Writer
}

// DefaultTimeout is how long a command waits for POST: longer than PAST's
// insert timeout, so that POST answers first.
const DefaultTimeout = 2 * time.Minute

// Default timeouts: go-imap's own before and after login.
const (
	DefaultLoginTimeout = 30 * time.Second
	DefaultIdleTimeout  = 35 * time.Minute
)

// DefaultAppendLimit is the largest message APPEND takes by default.
const DefaultAppendLimit = 64 << 20

// Errors a client sees as NO responses.
var (
	errUnavailable = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Mail store unavailable, try again"}
	errNoMailbox   = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent, Text: "No such mailbox"}
	errTryCreate   = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: "No such mailbox"}
	errExists      = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists, Text: "Mailbox already exists"}
	errServerBug   = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug, Text: "Internal error"}
	errGone        = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent, Text: "The selected mailbox was deleted"}
)

// Server is the IMAP server of one node.
type Server struct {
	cfg     Config
	imap    *imapserver.Server
	imapTLS *imapserver.Server // for implicit TLS (ServeTLS)
	limiter *authLimiter
	stats   counters

	// Owned by the loop: which folders POST calls us back for, and the
	// sessions to wake when one changes.
	watched map[*post.Folder]bool
	subs    map[*post.Folder]map[*session]bool

	mu     sync.Mutex
	closed bool
	done   chan struct{} // closed by Close: waiting commands give up
}

// New makes a server; Serve starts it.
func New(cfg Config) *Server {
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.AppendLimit == 0 {
		cfg.AppendLimit = DefaultAppendLimit
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 200
	}
	if cfg.MaxConnectionsPerIP <= 0 {
		cfg.MaxConnectionsPerIP = 50
	}
	if cfg.LoginTimeout <= 0 {
		cfg.LoginTimeout = DefaultLoginTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, watched: map[*post.Folder]bool{}, subs: map[*post.Folder]map[*session]bool{}, done: make(chan struct{})}
	s.limiter = newAuthLimiter(cfg.AuthLimit, cfg.Now)
	opts := imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			ss := &session{s: s, notify: make(chan struct{}, 1)}
			nc := c.NetConn()
			for unwrapped := false; !unwrapped; {
				switch c := nc.(type) {
				case *watchedConn:
					nc = c.Conn
				case *tls.Conn:
					nc = c.NetConn()
				default:
					unwrapped = true
				}
			}
			ss.remote = limiterKey(nc.RemoteAddr())
			if gc, ok := nc.(*guardedConn); ok {
				gc.sess.Store(ss)
			}
			return ss, nil, nil
		},
		Caps:         Caps(),
		Logger:       log.New(slogWriter{cfg.Log}, "", 0),
		TLSConfig:    cfg.TLS,
		InsecureAuth: cfg.InsecureAuth,
		DebugWriter:  cfg.Debug,
	}
	s.imap = imapserver.New(&opts)
	// Under implicit TLS go-imap is handed the watch's connection, not a
	// *tls.Conn, so it cannot tell that TLS is on: this server is told
	// that authenticating is safe (it is, over TLS) and that there is no
	// STARTTLS to offer.
	tlsOpts := opts
	tlsOpts.TLSConfig, tlsOpts.InsecureAuth = nil, true
	s.imapTLS = imapserver.New(&tlsOpts)
	return s
}

// Caps are the capabilities the server offers (beyond those go-imap adds
// on its own: IDLE, UNSELECT, ENABLE, SASL-IR, LITERAL-, AUTH=PLAIN).
func Caps() imap.CapSet {
	return imap.CapSet{
		imap.CapIMAP4rev1:      {},
		imap.CapIMAP4rev2:      {},
		imap.CapNamespace:      {},
		imap.CapUIDPlus:        {},
		imap.CapESearch:        {},
		imap.CapSearchRes:      {},
		imap.CapListExtended:   {},
		imap.CapListStatus:     {},
		imap.CapMove:           {},
		imap.CapStatusSize:     {},
		imap.CapBinary:         {},
		imap.CapChildren:       {},
		imap.CapSpecialUse:     {},
		imap.CapLiteralPlus:    {},
		imap.CapAppendLimit:    {},
		imap.CapUnauthenticate: {},
	}
}

// Serve accepts IMAP connections on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	return s.serve(s.imap, watchListener{s.guard(ln), s})
}

// guard applies the connection limits and timeouts to ln's connections.
func (s *Server) guard(ln net.Listener) net.Listener {
	return &guardedListener{Listener: ln, s: s, byKey: map[string]int{}}
}

func (s *Server) serve(srv *imapserver.Server, ln net.Listener) error {
	err := srv.Serve(ln)
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed && err != nil && errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Close closes every listener and connection.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	s.mu.Unlock()
	return errors.Join(s.imap.Close(), s.imapTLS.Close())
}

// slogWriter carries go-imap's log lines to the node's logger.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn("imapd: " + string(p))
	return len(p), nil
}

// do runs f on the loop with POST.
func (s *Server) do(f func(p *post.Post) error) error {
	var ferr error
	if err := s.cfg.Loop.Do(func() {
		// A bug here must cost one command, not the node's event loop.
		defer func() {
			if v := recover(); v != nil {
				s.cfg.Log.Error("imapd: panic on the event loop", "panic", v, "stack", string(debug.Stack()))
				ferr = errServerBug
			}
		}()
		p := s.cfg.Mail()
		if p == nil {
			ferr = errUnavailable
			return
		}
		ferr = f(p)
	}); err != nil {
		s.cfg.Log.Warn("imapd: event loop", "err", err)
		return errUnavailable
	}
	return ferr
}

// call runs start on the loop; start begins a POST operation and either
// returns an error at once or arranges for done to be called (on the
// loop) when the operation ends. call waits for done off the loop.
func (s *Server) call(start func(p *post.Post, done func(error)) error) error {
	ch := make(chan error, 1)
	done := func(err error) {
		select {
		case ch <- err:
		default:
		}
	}
	if err := s.do(func(p *post.Post) error { return start(p, done) }); err != nil {
		return err
	}
	t := time.NewTimer(s.cfg.Timeout)
	defer t.Stop()
	select {
	case err := <-ch:
		if err != nil {
			return s.storeError(err)
		}
		return nil
	case <-t.C:
		s.cfg.Log.Warn("imapd: POST did not answer in time", "timeout", s.cfg.Timeout)
		return errUnavailable
	case <-s.done:
		return errUnavailable
	}
}

// storeError turns a POST failure into a NO response: the change was not
// stored. Over the user's quota is OVERQUOTA; anything else (this node's
// disk full or failing, replicas unreachable) is temporary, UNAVAILABLE
// (RFC 5530), with a text that says which.
func (s *Server) storeError(err error) error {
	var ierr *imap.Error
	if errors.As(err, &ierr) {
		return err
	}
	no := func(code imap.ResponseCode, format string, args ...any) error {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: fmt.Sprintf(format, args...)}
	}
	switch {
	case errors.Is(err, post.ErrNoFolder):
		return errNoMailbox
	case errors.Is(err, post.ErrFolderExists):
		return errExists
	case errors.Is(err, post.ErrOverQuota):
		return no(imap.ResponseCodeOverQuota, "Over quota: delete some mail first (%v)", err)
	}
	s.cfg.Log.Warn("imapd: mail store", "err", err)
	switch {
	case errors.Is(err, object.ErrFull):
		return no(imap.ResponseCodeUnavailable, "Not stored: this node's disk is full, try again later")
	case errors.Is(err, object.ErrIO):
		return no(imap.ResponseCodeUnavailable, "Not stored: disk error on this node, try again later")
	}
	return no(imap.ResponseCodeUnavailable, "Not stored, try again (%v)", err)
}

// subscribe wakes sess whenever f changes. On the loop.
func (s *Server) subscribe(f *post.Folder, sess *session) {
	if !s.watched[f] {
		s.watched[f] = true
		f.Watch(func() {
			for other := range s.subs[f] {
				other.wake()
			}
		})
	}
	if s.subs[f] == nil {
		s.subs[f] = map[*session]bool{}
	}
	s.subs[f][sess] = true
}

// unsubscribe stops waking sess for f. On the loop.
func (s *Server) unsubscribe(f *post.Folder, sess *session) {
	delete(s.subs[f], sess)
	if len(s.subs[f]) == 0 {
		delete(s.subs, f)
	}
}
