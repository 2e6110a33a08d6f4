package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/epost-mail/epost/internal/env"
)

// DirectMX is a Relayer that delivers to each recipient domain's mail
// exchangers itself (RFC 5321 section 5), from a bounded in-memory queue:
// Relay queues a message and returns; delivery runs in the background,
// temporary failures are retried with exponential backoff, and a
// recipient that fails permanently (a 5xx, or still failing after
// GiveUp) gets its sender a bounce (RFC 3464-style) through Bounce.
//
// The queue is in memory: a message queued when the node stops is lost
// (the submitting client had its 250). Until the queue is persisted, a
// community that needs that guarantee relays through a smarthost instead.
//
// Opportunistic TLS (RFC 7435): STARTTLS is used when the exchanger offers
// it, without certificate checks unless TLS says otherwise; a failed
// handshake falls back to plain text. (go-smtp's client says EHLO
// localhost before STARTTLS and Hostname after it.)
type DirectMX struct {
	// Resolver finds exchangers (LookupMX, LookupIPAddr). Default
	// net.DefaultResolver.
	Resolver Resolver
	// Dial connects to an exchanger's address (host:port). Default a
	// net.Dialer with Timeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Port is the exchangers' SMTP port. Default "25".
	Port string
	// Hostname is the name sent in EHLO. Default "localhost".
	Hostname string
	// TLS configures STARTTLS; nil: opportunistic, unverified.
	TLS *tls.Config
	// MaxQueue bounds queued messages; beyond it Relay answers 452.
	// Default 1000.
	MaxQueue int
	// Workers bounds concurrent deliveries. Default 4.
	Workers int
	// Timeout bounds connecting and each SMTP command. Default 2 min.
	Timeout time.Duration
	// RetryBase is the first retry's delay, doubling up to RetryMax;
	// after GiveUp in all a recipient fails permanently. Defaults 1 min,
	// 2 h, 5 days (RFC 5321 section 4.5.4.1).
	RetryBase, RetryMax, GiveUp time.Duration
	// After runs f after d: the retry timer. Default time.AfterFunc.
	After func(d time.Duration, f func())
	// Now is the clock for GiveUp. Default time.Now.
	Now func() time.Time
	// Bounce delivers a bounce to a community sender (typically by POST's
	// Inject as the gateway user). Nil: bounces are logged and dropped.
	Bounce func(to string, msg []byte)
	// Log gets a line per delivery and failure. Nil discards.
	Log *slog.Logger
	// Spool, when set, is a directory where every queued message is
	// written and synced before Relay returns, and removed once delivered
	// or bounced: a restart loses nothing the submitter was told is
	// accepted. Resume picks the spool up again.
	Spool string

	once   sync.Once
	mu     sync.Mutex
	queued int
	closed bool
	sem    chan struct{}
}

// outMessage is one message on its way to some of its recipients.
type outMessage struct {
	From    string
	Msg     []byte
	First   time.Time
	Attempt int
	Pending []string // recipients not yet delivered nor failed
	file    string   // its spool file, if spooled
}

var _ Relayer = (*DirectMX)(nil)

func (d *DirectMX) init() {
	d.once.Do(func() {
		if d.Resolver == nil {
			d.Resolver = net.DefaultResolver
		}
		if d.Timeout <= 0 {
			d.Timeout = 2 * time.Minute
		}
		if d.Dial == nil {
			nd := &net.Dialer{Timeout: d.Timeout}
			d.Dial = nd.DialContext
		}
		if d.Port == "" {
			d.Port = "25"
		}
		if d.Hostname == "" {
			d.Hostname = "localhost"
		}
		if d.MaxQueue <= 0 {
			d.MaxQueue = 1000
		}
		if d.Workers <= 0 {
			d.Workers = 4
		}
		if d.RetryBase <= 0 {
			d.RetryBase = time.Minute
		}
		if d.RetryMax <= 0 {
			d.RetryMax = 2 * time.Hour
		}
		if d.GiveUp <= 0 {
			d.GiveUp = 5 * 24 * time.Hour
		}
		if d.After == nil {
			d.After = func(t time.Duration, f func()) { time.AfterFunc(t, f) }
		}
		if d.Now == nil {
			d.Now = time.Now
		}
		if d.Log == nil {
			d.Log = env.Discard
		}
		d.sem = make(chan struct{}, d.Workers)
	})
}

// Relay implements Relayer: nil once the message is queued.
func (d *DirectMX) Relay(from string, to []string, msg []byte) error {
	d.init()
	d.mu.Lock()
	closed := d.closed
	full := d.queued >= d.MaxQueue
	if !full && !closed {
		d.queued++
	}
	d.mu.Unlock()
	if closed {
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Outbound delivery is shutting down; try again later"}
	}
	if full {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Outbound queue full; try again later"}
	}
	m := &outMessage{From: from, Msg: bytes.Clone(msg), First: d.Now(), Pending: append([]string(nil), to...)}
	if err := d.spool(m); err != nil {
		d.mu.Lock()
		d.queued--
		d.mu.Unlock()
		d.Log.Error("gateway: spooling failed", "err", err)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Outbound queue unavailable; try again later"}
	}
	go d.attempt(m)
	return nil
}

// Close stops taking messages and drops the retries still pending (the
// queue is in memory); attempts under way finish.
func (d *DirectMX) Close() {
	d.init()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
}

// Queued reports how many messages are waiting for delivery.
func (d *DirectMX) Queued() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queued
}

// outcome of one recipient's delivery attempt.
type outcome struct {
	err  error
	perm bool
}

// attempt tries every pending recipient once, then retries, bounces or
// finishes.
func (d *DirectMX) attempt(m *outMessage) {
	d.sem <- struct{}{}
	results := map[string]outcome{}
	byDomain := map[string][]string{}
	for _, r := range m.Pending {
		byDomain[domainOf(r)] = append(byDomain[domainOf(r)], r)
	}
	domains := make([]string, 0, len(byDomain))
	for dom := range byDomain {
		domains = append(domains, dom)
	}
	sort.Strings(domains)
	for _, dom := range domains {
		for r, o := range d.deliverDomain(dom, m.From, byDomain[dom], m.Msg) {
			results[r] = o
		}
	}
	<-d.sem

	var retry, failed []string
	expired := d.Now().Sub(m.First) >= d.GiveUp
	for _, r := range m.Pending {
		o := results[r]
		switch {
		case o.err == nil:
			d.Log.Info("gateway: delivered", "from", m.From, "to", r)
		case o.perm || expired:
			failed = append(failed, r)
			d.Log.Warn("gateway: delivery failed", "from", m.From, "to", r, "err", o.err)
		default:
			retry = append(retry, r)
		}
	}
	if len(failed) > 0 {
		d.bounce(m, failed, results)
	}
	if len(retry) == 0 {
		if m.file != "" {
			if err := os.Remove(m.file); err != nil {
				d.Log.Warn("gateway: removing a spool file", "err", err)
			}
		}
		d.mu.Lock()
		d.queued--
		d.mu.Unlock()
		return
	}
	m.Pending = retry
	if err := d.spool(m); err != nil {
		d.Log.Warn("gateway: updating a spool file", "err", err)
	}
	delay := d.RetryBase
	for i := 0; i < m.Attempt && delay < d.RetryMax; i++ {
		delay *= 2
	}
	delay = min(delay, d.RetryMax)
	m.Attempt++
	d.Log.Info("gateway: delivery deferred", "from", m.From, "recipients", len(retry), "retry", delay)
	d.After(delay, func() {
		d.mu.Lock()
		closed := d.closed
		if closed {
			d.queued--
		}
		d.mu.Unlock()
		if !closed {
			d.attempt(m)
		}
	})
}

// exchangers are a domain's MX hosts by preference, or the domain itself
// when it has none (RFC 5321 section 5.1's implicit MX).
func (d *DirectMX) exchangers(ctx context.Context, domain string) ([]string, outcome) {
	mxs, err := d.Resolver.LookupMX(ctx, domain)
	var dnsErr *net.DNSError
	if err != nil {
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			if _, err := d.Resolver.LookupIPAddr(ctx, domain); err == nil {
				return []string{domain}, outcome{}
			}
			return nil, outcome{err: fmt.Errorf("domain %s has no mail exchanger", domain), perm: true}
		}
		return nil, outcome{err: fmt.Errorf("MX lookup for %s: %w", domain, err)}
	}
	sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
	var hosts []string
	for _, mx := range mxs {
		h := strings.TrimSuffix(mx.Host, ".")
		if h == "" { // RFC 7505 null MX: the domain takes no mail
			return nil, outcome{err: fmt.Errorf("domain %s accepts no mail (null MX)", domain), perm: true}
		}
		hosts = append(hosts, h)
	}
	return hosts, outcome{}
}

// deliverDomain tries a domain's exchangers in order until one gives an
// answer for the recipients (a reply, positive or negative).
func (d *DirectMX) deliverDomain(domain, from string, rcpts []string, msg []byte) map[string]outcome {
	ctx, cancel := context.WithTimeout(context.Background(), d.Timeout)
	defer cancel()
	all := func(o outcome) map[string]outcome {
		out := map[string]outcome{}
		for _, r := range rcpts {
			out[r] = o
		}
		return out
	}
	hosts, o := d.exchangers(ctx, domain)
	if o.err != nil {
		return all(o)
	}
	last := outcome{err: fmt.Errorf("no exchanger of %s reachable", domain)}
	for _, h := range hosts {
		res, err := d.deliverHost(ctx, h, from, rcpts, msg)
		if err == nil {
			return res
		}
		last = outcome{err: fmt.Errorf("%s: %w", h, err)}
	}
	return all(last)
}

// deliverHost speaks SMTP with one exchanger. It returns per-recipient
// outcomes once the exchanger answered, or an error when another
// exchanger should be tried (could not connect, or the session broke
// down before the message was answered).
func (d *DirectMX) deliverHost(ctx context.Context, host, from string, rcpts []string, msg []byte) (map[string]outcome, error) {
	addr := net.JoinHostPort(host, d.Port)
	c, err := d.connect(ctx, host, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = d.Timeout, d.Timeout
	if err := c.Hello(d.Hostname); err != nil {
		return nil, err
	}
	out := map[string]outcome{}
	// Internationalised addresses need SMTPUTF8 (RFC 6531); an exchanger
	// without it refuses them here and the message bounces or retries.
	opts := &smtp.MailOptions{Size: int64(len(msg)), UTF8: !ascii(from)}
	for _, r := range rcpts {
		opts.UTF8 = opts.UTF8 || !ascii(r)
	}
	if err := c.Mail(from, opts); err != nil {
		return d.allReply(rcpts, err)
	}
	var accepted []string
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			var se *smtp.SMTPError
			if !errors.As(err, &se) {
				return nil, err
			}
			out[r] = outcome{err: err, perm: se.Code >= 500}
			continue
		}
		accepted = append(accepted, r)
	}
	if len(accepted) == 0 {
		c.Quit()
		return out, nil
	}
	w, err := c.Data()
	if err != nil {
		res, err := d.allReply(accepted, err)
		for r, o := range res {
			out[r] = o
		}
		return out, err
	}
	if _, err := w.Write(msg); err != nil {
		w.Close()
		return nil, err
	}
	err = w.Close()
	for _, r := range accepted {
		out[r] = outcome{}
	}
	if err != nil {
		res, err := d.allReply(accepted, err)
		if err != nil {
			return nil, err
		}
		for r, o := range res {
			out[r] = o
		}
	}
	c.Quit()
	return out, nil
}

// allReply gives every recipient the exchanger's reply; an error that is
// not a reply means: try another exchanger.
func (d *DirectMX) allReply(rcpts []string, err error) (map[string]outcome, error) {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return nil, err
	}
	out := map[string]outcome{}
	for _, r := range rcpts {
		out[r] = outcome{err: err, perm: se.Code >= 500}
	}
	return out, nil
}

// connect dials addr, with STARTTLS if the exchanger offers it.
func (d *DirectMX) connect(ctx context.Context, host, addr string) (*smtp.Client, error) {
	conn, err := d.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := d.TLS
	if tc == nil {
		tc = &tls.Config{ServerName: host, InsecureSkipVerify: true} // opportunistic, RFC 7435
	}
	conn.SetDeadline(time.Now().Add(d.Timeout))
	c, err := smtp.NewClientStartTLS(conn, tc)
	if err == nil {
		conn.SetDeadline(time.Time{})
		return c, nil
	}
	if d.TLS != nil && !tc.InsecureSkipVerify {
		return nil, fmt.Errorf("STARTTLS: %w", err)
	}
	// No STARTTLS, or a failed handshake: plain text.
	conn, err = d.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return smtp.NewClient(conn), nil
}

// bounce tells the sender which recipients failed (RFC 3464's
// human-readable part; RFC 5321 section 6.1). A bounce is never sent for
// a bounce (null sender).
func (d *DirectMX) bounce(m *outMessage, failed []string, results map[string]outcome) {
	if m.From == "" || d.Bounce == nil {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", d.Hostname)
	fmt.Fprintf(&b, "To: <%s>\r\n", m.From)
	b.WriteString("Subject: Undelivered Mail Returned to Sender\r\n")
	b.WriteString("Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	b.WriteString("Your message could not be delivered to these recipients:\r\n\r\n")
	for _, r := range failed {
		fmt.Fprintf(&b, "  <%s>: %v\r\n", r, results[r].err)
	}
	b.WriteString("\r\n----- Headers of the original message -----\r\n\r\n")
	hdr, _, _ := bytes.Cut(m.Msg, []byte("\r\n\r\n"))
	b.Write(hdr)
	b.WriteString("\r\n")
	d.Bounce(m.From, []byte(b.String()))
}

// spool writes m to the spool directory and syncs it (file, then
// directory), when there is one.
func (d *DirectMX) spool(m *outMessage) error {
	if d.Spool == "" {
		return nil
	}
	if m.file == "" {
		sum := sha256.Sum256(append([]byte(m.From+"\x00"+strings.Join(m.Pending, ",")+"\x00"+m.First.String()), m.Msg...))
		m.file = filepath.Join(d.Spool, hex.EncodeToString(sum[:12])+".json")
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(d.Spool, 0o700); err != nil {
		return err
	}
	tmp := m.file + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, m.file); err != nil {
		return err
	}
	dir, err := os.Open(d.Spool)
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// decodeSpool reads a spool file; one with no recipient left is no use.
func decodeSpool(b []byte) (*outMessage, error) {
	m := &outMessage{}
	if err := json.Unmarshal(b, m); err != nil {
		return nil, err
	}
	if len(m.Pending) == 0 {
		return nil, errors.New("no pending recipients")
	}
	return m, nil
}

// Resume queues again every message a previous run spooled and did not
// finish; it returns how many.
func (d *DirectMX) Resume() (int, error) {
	d.init()
	if d.Spool == "" {
		return 0, nil
	}
	files, err := filepath.Glob(filepath.Join(d.Spool, "*.json"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return n, err
		}
		m, err := decodeSpool(b)
		if err != nil {
			d.Log.Warn("gateway: unreadable spool file left alone", "file", f, "err", err)
			continue
		}
		m.file = f
		d.mu.Lock()
		d.queued++
		d.mu.Unlock()
		n++
		go d.attempt(m)
	}
	return n, nil
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
