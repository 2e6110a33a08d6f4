package imapd

import (
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// AuthLimit configures the brute-force limiter on failed LOGIN and
// AUTHENTICATE, counted both per username and per remote address (an
// IPv6 address counts as its /64). A username may fail Free times, an
// address FreePerIP times; each further failure locks the username or
// address out, for Base after the first, doubling each time up to Max.
// While either is locked out, a login is answered NO [UNAVAILABLE] before
// any password is checked. A record is forgotten Forget after its last
// failure; a success does not clear it.
//
// The per-username count stops guessing one password from many
// addresses; the larger per-address one stops trying passwords on many
// usernames, while one user's typos on a shared address (most clients
// are on the node's loopback) do not lock out everyone.
type AuthLimit struct {
	Free      int
	FreePerIP int
	Base      time.Duration
	Max       time.Duration
	Forget    time.Duration
}

// DefaultAuthLimit: five failures per username and twenty per address
// are free, then 30 s, 1 min, 2 min, ... up to 30 min.
func DefaultAuthLimit() AuthLimit {
	return AuthLimit{Free: 5, FreePerIP: 20, Base: 30 * time.Second, Max: 30 * time.Minute, Forget: time.Hour}
}

// maxTracked bounds the limiter's memory: beyond it, expired records are
// pruned on every new key, and if none has expired the one whose last
// failure is oldest goes.
const maxTracked = 10000

// maxKeyLen bounds a key's length (usernames come from the client).
const maxKeyLen = 256

type authRecord struct {
	fails int
	last  time.Time // of the latest failure
	until time.Time // locked out until then
}

// authLimiter counts login failures per key; safe for concurrent use.
type authLimiter struct {
	cfg AuthLimit
	now func() time.Time

	mu   sync.Mutex
	recs map[string]*authRecord
}

func newAuthLimiter(cfg AuthLimit, now func() time.Time) *authLimiter {
	d := DefaultAuthLimit()
	if cfg.Free <= 0 {
		cfg.Free = d.Free
	}
	if cfg.FreePerIP <= 0 {
		cfg.FreePerIP = max(4*cfg.Free, cfg.Free)
	}
	if cfg.Base <= 0 {
		cfg.Base = d.Base
	}
	if cfg.Max < cfg.Base {
		cfg.Max = max(d.Max, cfg.Base)
	}
	if cfg.Forget < cfg.Max {
		cfg.Forget = max(d.Forget, cfg.Max)
	}
	return &authLimiter{cfg: cfg, now: now, recs: map[string]*authRecord{}}
}

// lockedFor reports how long key stays locked out (0: not locked).
func (l *authLimiter) lockedFor(key string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.recs[key]
	if r == nil {
		return 0
	}
	now := l.now()
	if now.Sub(r.last) > l.cfg.Forget {
		delete(l.recs, key)
		return 0
	}
	return max(r.until.Sub(now), 0)
}

// fail records a failure against key and returns the lockout it starts
// (0 while the first free failures last).
func (l *authLimiter) fail(key string, free int) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	r := l.recs[key]
	if r == nil || now.Sub(r.last) > l.cfg.Forget {
		if len(l.recs) >= maxTracked {
			for k, r := range l.recs {
				if now.Sub(r.last) > l.cfg.Forget {
					delete(l.recs, k)
				}
			}
		}
		if len(l.recs) >= maxTracked {
			var oldest string
			var at time.Time
			for k, r := range l.recs {
				if oldest == "" || r.last.Before(at) {
					oldest, at = k, r.last
				}
			}
			delete(l.recs, oldest)
		}
		r = &authRecord{}
		l.recs[key] = r
	}
	r.fails++
	r.last = now
	if r.fails < free {
		return 0
	}
	d := l.cfg.Base
	for i := free; i < r.fails && d < l.cfg.Max; i++ {
		d *= 2
	}
	d = min(d, l.cfg.Max)
	r.until = now.Add(d)
	return d
}

// userKey is the limiter key of a username, apart from addresses'.
func userKey(username string) string {
	k := "user:" + strings.ToLower(username)
	if len(k) > maxKeyLen {
		k = k[:maxKeyLen]
	}
	return k
}

// limiterKey is the remote IP, an IPv6 address as its /64.
func limiterKey(a net.Addr) string {
	var ip net.IP
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.IP
	case nil:
		return ""
	default:
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return a.String()
		}
		if ip = net.ParseIP(host); ip == nil {
			return host
		}
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// Stats counts a server's logins and the refusals of hostile or broken
// clients; the node's status page and metrics show them
// (node.AddCounters).
type Stats struct {
	LoginOK        uint64 // successful LOGIN and AUTHENTICATE
	LoginFailed    uint64 // wrong credentials
	LoginThrottled uint64 // logins refused because the username or address was locked out
	TooLarge       uint64 // commands answered NO or BAD [TOOBIG] (an APPEND over AppendLimit, a big literal elsewhere)
	TimedOut       uint64 // connections whose read passed its deadline (silent past LoginTimeout or IdleTimeout, or stalled mid-command)
	ConnRefused    uint64 // connections refused for exceeding MaxConnections or MaxConnectionsPerIP
}

type counters struct {
	loginOK, loginFailed, loginThrottled, tooLarge, timedOut, connRefused atomic.Uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		LoginOK: c.loginOK.Load(), LoginFailed: c.loginFailed.Load(), LoginThrottled: c.loginThrottled.Load(),
		TooLarge: c.tooLarge.Load(), TimedOut: c.timedOut.Load(), ConnRefused: c.connRefused.Load(),
	}
}

// guardedListener wraps the listener (beneath implicit TLS): past
// MaxConnections open connections, or MaxConnectionsPerIP from one
// address, a new connection gets a BYE and is closed before any session
// is made; the others become guardedConns.
type guardedListener struct {
	net.Listener
	s *Server

	mu    sync.Mutex
	open  int
	byKey map[string]int
}

func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := limiterKey(c.RemoteAddr())
		l.mu.Lock()
		ok := l.open < l.s.cfg.MaxConnections && l.byKey[key] < l.s.cfg.MaxConnectionsPerIP
		if ok {
			l.open++
			l.byKey[key]++
		}
		l.mu.Unlock()
		if ok {
			return &guardedConn{Conn: c, l: l, key: key}, nil
		}
		l.s.stats.connRefused.Add(1)
		go func() {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte("* BYE [UNAVAILABLE] Too many connections, try again later\r\n"))
			c.Close()
		}()
	}
}

func (l *guardedListener) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.byKey[key]--; l.byKey[key] <= 0 {
		delete(l.byKey, key)
	}
}

// guardedConn is one client connection. It gives its slot back when
// closed, shortens go-imap's read deadlines to LoginTimeout before login
// and IdleTimeout after it, and counts a read timeout.
type guardedConn struct {
	net.Conn
	l       *guardedListener
	key     string
	sess    atomic.Pointer[session]
	once    sync.Once
	timeout sync.Once
}

func (c *guardedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key) })
	return err
}

// SetReadDeadline caps the deadline go-imap asks for (its own are 30 s
// before login and 35 min after, in IDLE too) at the configured timeout.
func (c *guardedConn) SetReadDeadline(t time.Time) error {
	limit := c.l.s.cfg.LoginTimeout
	if ss := c.sess.Load(); ss != nil && ss.authed.Load() {
		limit = c.l.s.cfg.IdleTimeout
	}
	if limit > 0 {
		if most := time.Now().Add(limit); t.IsZero() || t.After(most) {
			t = most
		}
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline goes through SetReadDeadline's cap.
func (c *guardedConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *guardedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		c.timeout.Do(func() { c.l.s.stats.timedOut.Add(1) })
	}
	return n, err
}
