package gateway

import (
	"errors"
	"net"
	"sync"
	"time"
)

// Rate is a token bucket: PerMinute tokens a minute, up to Burst.
type Rate struct {
	PerMinute, Burst float64
}

// maxTracked bounds a limiter's memory: beyond it, full buckets (clients
// idle long enough to have their whole burst back) are forgotten.
const maxTracked = 10000

type bucket struct {
	tokens float64
	last   time.Time
}

// rateLimiter is one token bucket per client address; safe for concurrent
// use (every SMTP connection has its own goroutine).
type rateLimiter struct {
	rate Rate
	now  func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

func newRateLimiter(r Rate, now func() time.Time) *rateLimiter {
	return &rateLimiter{rate: r, now: now, buckets: map[string]*bucket{}}
}

// take spends one of key's tokens, if it has one.
func (l *rateLimiter) take(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxTracked {
			l.prune(now)
		}
		b = &bucket{tokens: l.rate.Burst, last: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *rateLimiter) refill(b *bucket, now time.Time) {
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens = min(l.rate.Burst, b.tokens+dt.Minutes()*l.rate.PerMinute)
		b.last = now
	}
}

func (l *rateLimiter) prune(now time.Time) {
	for k, b := range l.buckets {
		if l.refill(b, now); b.tokens >= l.rate.Burst {
			delete(l.buckets, k)
		}
	}
}

// connLimiter wraps a listener: past total open connections, perIP from
// one client address, or the address's connection rate, a new connection
// is answered 421 and closed at once (RFC 5321 section 3.8), before any
// session state is made.
type connLimiter struct {
	net.Listener
	total, perIP int
	rate         *rateLimiter
	rejected     func()
	timedOut     func() // a connection's read timed out (once per connection)

	mu    sync.Mutex
	open  int
	byKey map[string]int
}

// Accept returns the next connection within the limits.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := limiterKey(c.RemoteAddr())
		l.mu.Lock()
		ok := l.open < l.total && l.byKey[key] < l.perIP
		if ok {
			l.open++
			l.byKey[key]++
		}
		l.mu.Unlock()
		if ok && !l.rate.take(key) {
			l.release(key)
			ok = false
		}
		if ok {
			return &limitedConn{Conn: c, l: l, key: key}, nil
		}
		l.rejected()
		go func() {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte("421 4.7.0 Too many connections; try again later\r\n"))
			c.Close()
		}()
	}
}

func (l *connLimiter) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.byKey[key]--; l.byKey[key] <= 0 {
		delete(l.byKey, key)
	}
}

// limitedConn gives its slot back when closed (once), and reports a read
// timeout (once).
type limitedConn struct {
	net.Conn
	l       *connLimiter
	key     string
	once    sync.Once
	timeout sync.Once
}

func (c *limitedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	var ne net.Error
	if err != nil && c.l.timedOut != nil && errors.As(err, &ne) && ne.Timeout() {
		c.timeout.Do(c.l.timedOut)
	}
	return n, err
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key) })
	return err
}

// limiterKey is what limits count against: the client's IP, an IPv6
// address as its /64 (one host usually holds a whole /64).
func limiterKey(a net.Addr) string {
	ip := addrIP(a)
	if ip == nil {
		if a == nil {
			return ""
		}
		return a.String()
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// addrIP is a's IP address, nil if it has none.
func addrIP(a net.Addr) net.IP {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP
	case *net.UDPAddr:
		return a.IP
	case nil:
		return nil
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return nil
	}
	return net.ParseIP(host)
}
