package smtpd

import (
	"net"
	"strings"
	"sync"
	"time"
)

// AuthLimit configures the brute-force limiter on AUTH failures, counted
// both per username and per remote address (an IPv6 address counts as
// its /64). A username may fail Free times, an address FreePerIP times;
// each further failure locks the username or address out, for Base after
// the first, doubling each time up to Max. While either is locked out,
// AUTH is refused with 454 before any password is checked. A record is
// forgotten Forget after its last failure; a success does not clear it
// (so one valid account does not buy unlimited guesses at others).
//
// The per-username count stops guessing one password from many
// addresses; the larger per-address one stops trying a few passwords on
// many usernames, while someone else's typos on a shared address (most
// clients are on the node's loopback) do not lock out every user at once.
type AuthLimit struct {
	Free      int
	FreePerIP int
	Base      time.Duration
	Max       time.Duration
	Forget    time.Duration
}

// DefaultAuthLimit: five typos per username and twenty per address are
// free, then 30 s, 1 min, 2 min, ... up to 30 min; a day-long attack gets
// at most a few dozen guesses per address an hour once locked out.
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

// authLimiter counts AUTH failures per remote address. Safe for
// concurrent use: every SMTP connection has its own goroutine.
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
		cfg.FreePerIP = max(4*cfg.Free, cfg.Free) // max: no overflow with a huge Free
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
	if d := r.until.Sub(now); d > 0 {
		return d
	}
	return 0
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
			l.prune(now)
		}
		if len(l.recs) >= maxTracked {
			l.evictOldest()
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

func (l *authLimiter) evictOldest() {
	var oldest string
	var at time.Time
	for k, r := range l.recs {
		if oldest == "" || r.last.Before(at) {
			oldest, at = k, r.last
		}
	}
	delete(l.recs, oldest)
}

func (l *authLimiter) prune(now time.Time) {
	for k, r := range l.recs {
		if now.Sub(r.last) > l.cfg.Forget {
			delete(l.recs, k)
		}
	}
}

// userKey is the limiter key of a username, apart from addresses'.
func userKey(username string) string {
	k := "user:" + strings.ToLower(username)
	if len(k) > maxKeyLen {
		k = k[:maxKeyLen]
	}
	return k
}

// limiterKey is what failures are counted against: the remote IP, an IPv6
// address as its /64 (one host usually holds a whole /64).
func limiterKey(a net.Addr) string {
	var ip net.IP
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		if a == nil {
			return ""
		}
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return a.String()
		}
		ip = net.ParseIP(host)
		if ip == nil {
			return host
		}
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// isLoopback reports whether a is a loopback (or Unix-socket) peer.
func isLoopback(a net.Addr) bool {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	return false
}

// SendLimit bounds how many recipients each user may send to: a token
// bucket per authenticated user, refilled at PerMinute up to Burst, one
// token per recipient of each message. A message beyond it gets a 451
// (the client retries later); a stolen password cannot turn the node into
// a spam cannon.
type SendLimit struct {
	PerMinute, Burst float64
}

// DefaultSendLimit allows a 300-recipient announcement at once, then 10
// recipients a minute (14,400 a day).
func DefaultSendLimit() SendLimit { return SendLimit{PerMinute: 10, Burst: 300} }

type bucket struct {
	tokens float64
	last   time.Time
}

// sendLimiter is SendLimit's state; safe for concurrent use.
type sendLimiter struct {
	cfg SendLimit
	now func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

func newSendLimiter(cfg SendLimit, now func() time.Time) *sendLimiter {
	d := DefaultSendLimit()
	if cfg.PerMinute <= 0 {
		cfg.PerMinute = d.PerMinute
	}
	if cfg.Burst <= 0 {
		cfg.Burst = d.Burst
	}
	return &sendLimiter{cfg: cfg, now: now, buckets: map[string]*bucket{}}
}

// take spends n tokens of user's bucket, if it holds them.
func (l *sendLimiter) take(user string, n int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.buckets[user]
	if b == nil {
		b = &bucket{tokens: l.cfg.Burst, last: now}
		l.buckets[user] = b
	}
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens = min(l.cfg.Burst, b.tokens+dt.Minutes()*l.cfg.PerMinute)
		b.last = now
	}
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// refund returns n tokens (the message was not sent after all).
func (l *sendLimiter) refund(user string, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.buckets[user]; b != nil {
		b.tokens = min(l.cfg.Burst, b.tokens+float64(n))
	}
}
