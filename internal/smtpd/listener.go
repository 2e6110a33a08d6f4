package smtpd

import (
	"errors"
	"net"
	"sync"
	"time"
)

// connLimiter wraps a listener: past MaxConnections open connections in
// all, or MaxConnectionsPerIP from one remote address, a new connection
// is answered "421" and closed at once (RFC 5321 section 3.8), before any
// session state is made.
//
// It also counts connections that end because a read timed out
// (ReadTimeout: a client that stopped talking, or sends too slowly).
type connLimiter struct {
	net.Listener
	total, perIP int
	stats        *counters

	mu    sync.Mutex
	open  int
	byKey map[string]int
}

func newConnLimiter(ln net.Listener, total, perIP int, stats *counters) *connLimiter {
	return &connLimiter{Listener: ln, total: total, perIP: perIP, stats: stats, byKey: map[string]int{}}
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
		if ok {
			return &limitedConn{Conn: c, l: l, key: key}, nil
		}
		l.stats.connRefused.Add(1)
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

// limitedConn gives its slot back when closed (once), and counts a read
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
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		c.timeout.Do(func() { c.l.stats.timedOut.Add(1) })
	}
	return n, err
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key) })
	return err
}
