// Package mailbench measures end-to-end mail latency and throughput
// through any SMTP submission server and IMAP server: it submits messages
// as one user and times each from the start of its submission until it is
// visible in the recipient's INBOX. It speaks only the standard protocols,
// so the same run works against epost and against a conventional mail
// server, which is what makes the numbers comparable.
package mailbench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/epost-mail/epost/internal/mailnet"
)

// TLS modes for each protocol.
const (
	// TLSAuto uses a plain connection, and STARTTLS only when the server
	// will not authenticate without it (SMTP: no AUTH PLAIN advertised;
	// IMAP: LOGINDISABLED) and offers it.
	TLSAuto = "auto"
	// TLSStartTLS always upgrades with STARTTLS.
	TLSStartTLS = "starttls"
	// TLSImplicit connects with TLS from the first byte (ports 465, 993).
	TLSImplicit = "tls"
	// TLSNone never uses TLS.
	TLSNone = "none"
)

// Config is one benchmark run.
type Config struct {
	SMTP, IMAP       string // host:port of the submission and IMAP servers
	From, FromPass   string // the sender: SMTP AUTH PLAIN identity
	To, ToPass       string // the recipient: IMAP LOGIN identity
	Messages         int    // messages to send
	Size             int    // approximate message size in bytes
	Concurrency      int    // parallel SMTP sessions
	SMTPTLS, IMAPTLS string // TLS modes (TLSAuto when empty)
	// Insecure skips certificate verification; it is implied for loopback
	// addresses, where self-signed certificates are the norm.
	Insecure bool
	// Poll forces polling the INBOX instead of IDLE.
	Poll bool
	// PollInterval is the polling period without IDLE (20 ms when zero).
	PollInterval time.Duration
	// Timeout bounds the wait for the last message after the last
	// submission (60 s when zero).
	Timeout time.Duration
}

// Result is what a run measured. Latencies are in milliseconds, over the
// messages that arrived.
type Result struct {
	SMTP        string `json:"smtp"`
	IMAP        string `json:"imap"`
	Messages    int    `json:"messages"`
	Size        int    `json:"size"`
	Concurrency int    `json:"concurrency"`
	Sent        int    `json:"sent"`      // accepted by the SMTP server
	Delivered   int    `json:"delivered"` // seen in the INBOX
	Errors      int    `json:"errors"`    // submissions refused plus messages never seen
	FirstError  string `json:"first_error,omitempty"`
	// Missed counts messages not seen in time that a final scan of the
	// whole INBOX finds: late, or given a UID below one already seen.
	Missed     int     `json:"missed,omitempty"`
	Watch      string  `json:"watch"` // "idle" or "poll"
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"throughput"` // delivered messages per second over the run
	P50        float64 `json:"p50_ms"`
	P90        float64 `json:"p90_ms"`
	P99        float64 `json:"p99_ms"`
	Min        float64 `json:"min_ms"`
	Max        float64 `json:"max_ms"`
	Mean       float64 `json:"mean_ms"`
	SubmitP50  float64 `json:"submit_p50_ms"` // SMTP transaction alone
}

// Run runs the benchmark.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Messages <= 0 {
		cfg.Messages = 1
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.Concurrency > cfg.Messages {
		cfg.Concurrency = cfg.Messages
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	res := &Result{SMTP: cfg.SMTP, IMAP: cfg.IMAP, Messages: cfg.Messages, Size: cfg.Size, Concurrency: cfg.Concurrency}

	var runID [6]byte
	rand.Read(runID[:])
	run := hex.EncodeToString(runID[:])
	tokens := make([]string, cfg.Messages)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("mb%s-%d", run, i)
	}

	tr := &tracker{start: make(map[string]time.Time), seen: make(map[string]time.Duration), all: make(chan struct{})}
	tr.want = cfg.Messages

	w, err := newWatcher(cfg)
	if err != nil {
		return nil, fmt.Errorf("imap: %w", err)
	}
	defer w.close()
	res.Watch = w.mode
	wctx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() { watchDone <- w.watch(wctx, tr) }()

	dial, err := smtpDialer(cfg)
	if err != nil {
		stopWatch()
		return nil, fmt.Errorf("smtp: %w", err)
	}

	begin := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var submit []time.Duration
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		res.Errors++
		if res.FirstError == "" {
			res.FirstError = err.Error()
		}
	}
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *smtp.Client
			defer func() {
				if c != nil {
					c.Quit()
				}
			}()
			for i := range jobs {
				msg := message(cfg, tokens[i])
				t0 := time.Now()
				tr.started(tokens[i], t0)
				if c == nil {
					var err error
					if c, err = dial(); err != nil {
						c = nil
						tr.failed(tokens[i])
						fail(err)
						continue
					}
				}
				if err := send(c, cfg, msg); err != nil {
					c.Close()
					c = nil
					tr.failed(tokens[i])
					fail(err)
					continue
				}
				d := time.Since(t0)
				mu.Lock()
				res.Sent++
				submit = append(submit, d)
				mu.Unlock()
			}
		}()
	}
feed:
	for i := range cfg.Messages {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()

	select {
	case <-tr.all:
	case <-time.After(cfg.Timeout):
	case <-ctx.Done():
	case err := <-watchDone:
		// The watcher died: what it saw so far still counts.
		if err != nil {
			fail(fmt.Errorf("imap: %w", err))
		}
		watchDone <- nil
	}
	stopWatch()
	if err := <-watchDone; err != nil && !errors.Is(err, context.Canceled) {
		fail(fmt.Errorf("imap: %w", err))
	}

	lat, last := tr.results()
	res.Delivered = len(lat)
	if lost := res.Sent - res.Delivered; lost > 0 {
		// Tell a message that never arrived from one the watcher missed:
		// late, or under a UID below one already seen.
		res.Missed = w.scanMissing(tr)
		mu.Lock()
		res.Errors += lost
		if res.FirstError == "" {
			res.FirstError = fmt.Sprintf("%d messages accepted but not seen in INBOX within %v (%d of them in INBOX at the end)", lost, cfg.Timeout, res.Missed)
		}
		mu.Unlock()
	}
	end := last
	if end.IsZero() {
		end = time.Now()
	}
	res.Seconds = end.Sub(begin).Seconds()
	if res.Seconds > 0 {
		res.Throughput = float64(res.Delivered) / res.Seconds
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50, res.P90, res.P99 = ms(quantile(lat, 0.50)), ms(quantile(lat, 0.90)), ms(quantile(lat, 0.99))
		res.Min, res.Max = ms(lat[0]), ms(lat[len(lat)-1])
		var sum time.Duration
		for _, d := range lat {
			sum += d
		}
		res.Mean = ms(sum / time.Duration(len(lat)))
	}
	if len(submit) > 0 {
		slices.Sort(submit)
		res.SubmitP50 = ms(quantile(submit, 0.5))
	}
	return res, nil
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

// quantile is the nearest-rank quantile of sorted ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// tracker pairs submissions with their arrival.
type tracker struct {
	mu    sync.Mutex
	start map[string]time.Time
	seen  map[string]time.Duration
	last  time.Time
	want  int
	done  bool
	all   chan struct{}
}

func (t *tracker) started(tok string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.start[tok] = at
}

// failed stops waiting for a message whose submission failed.
func (t *tracker) failed(tok string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.start, tok)
	t.want--
	t.check()
}

// arrived records a token seen in the INBOX at time at.
func (t *tracker) arrived(tok string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.start[tok]
	if !ok {
		return // not ours, or a submission that failed
	}
	if _, dup := t.seen[tok]; dup {
		return
	}
	t.seen[tok] = at.Sub(s)
	if at.After(t.last) {
		t.last = at
	}
	t.check()
}

func (t *tracker) check() {
	if !t.done && len(t.seen) >= t.want {
		t.done = true
		close(t.all)
	}
}

func (t *tracker) results() ([]time.Duration, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]time.Duration, 0, len(t.seen))
	for _, d := range t.seen {
		out = append(out, d)
	}
	return out, t.last
}

// message builds an RFC 5322 message of about cfg.Size bytes carrying tok
// in its Message-ID and Subject.
func message(cfg Config, tok string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: mailbench %s\r\nMessage-ID: <%s@mailbench.invalid>\r\nDate: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
		cfg.From, cfg.To, tok, tok, time.Now().Format(time.RFC1123Z))
	const line = "The quick brown fox jumps over the lazy dog, 0123456789 abcdefghijklmnopq\r\n" // 76 bytes
	for b.Len()+len(line) <= cfg.Size {
		b.WriteString(line)
	}
	if b.Len() < cfg.Size {
		b.WriteString(strings.Repeat("x", max(0, cfg.Size-b.Len()-2)))
		b.WriteString("\r\n")
	}
	return []byte(b.String())
}

func tlsConfig(cfg Config, addr string) *tls.Config {
	host, _, _ := net.SplitHostPort(addr)
	return &tls.Config{ServerName: host, InsecureSkipVerify: cfg.Insecure || mailnet.IsLoopback(addr)}
}

// smtpDialer settles the TLS mode once, by probing the server in auto
// mode, and returns a function opening authenticated sessions.
func smtpDialer(cfg Config) (func() (*smtp.Client, error), error) {
	mode := cfg.SMTPTLS
	if mode == "" {
		mode = TLSAuto
	}
	tc := tlsConfig(cfg, cfg.SMTP)
	if mode == TLSAuto {
		c, err := smtp.Dial(cfg.SMTP)
		if err != nil {
			return nil, err
		}
		err = c.Hello("localhost")
		plain := err == nil && c.SupportsAuth(sasl.Plain)
		starttls, _ := c.Extension("STARTTLS")
		c.Close()
		if err != nil {
			return nil, err
		}
		mode = TLSNone
		if !plain && starttls {
			mode = TLSStartTLS
		}
	}
	dial := func() (*smtp.Client, error) {
		var c *smtp.Client
		var err error
		switch mode {
		case TLSNone:
			c, err = smtp.Dial(cfg.SMTP)
		case TLSStartTLS:
			c, err = smtp.DialStartTLS(cfg.SMTP, tc)
		case TLSImplicit:
			c, err = smtp.DialTLS(cfg.SMTP, tc)
		default:
			return nil, fmt.Errorf("unknown TLS mode %q", mode)
		}
		if err != nil {
			return nil, err
		}
		if err := c.Hello("localhost"); err != nil {
			c.Close()
			return nil, err
		}
		if err := c.Auth(sasl.NewPlainClient("", cfg.From, cfg.FromPass)); err != nil {
			c.Close()
			return nil, fmt.Errorf("AUTH PLAIN as %s: %w", cfg.From, err)
		}
		return c, nil
	}
	// One session up front, so a wrong password fails the run at once.
	c, err := dial()
	if err != nil {
		return nil, err
	}
	c.Quit()
	return dial, nil
}

// send runs one mail transaction on an open session.
func send(c *smtp.Client, cfg Config, msg []byte) error {
	if err := c.Mail(cfg.From, nil); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	if err := c.Rcpt(cfg.To, nil); err != nil {
		return fmt.Errorf("RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		w.Close()
		return fmt.Errorf("DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	return nil
}

// watcher follows the recipient's INBOX.
type watcher struct {
	cfg    Config
	c      *imapclient.Client
	mode   string // "idle" or "poll"
	next   imap.UID
	notify chan struct{}
}

func newWatcher(cfg Config) (*watcher, error) {
	w := &watcher{cfg: cfg, notify: make(chan struct{}, 1)}
	opts := &imapclient.Options{
		TLSConfig: tlsConfig(cfg, cfg.IMAP),
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					select {
					case w.notify <- struct{}{}:
					default:
					}
				}
			},
		},
	}
	mode := cfg.IMAPTLS
	if mode == "" {
		mode = TLSAuto
	}
	var c *imapclient.Client
	var err error
	switch mode {
	case TLSAuto, TLSNone:
		var conn net.Conn
		conn, err = net.DialTimeout("tcp", cfg.IMAP, 10*time.Second)
		if err != nil {
			return nil, err
		}
		c = imapclient.New(conn, opts)
		if mode == TLSAuto {
			if err := c.WaitGreeting(); err != nil {
				c.Close()
				return nil, err
			}
			caps := c.Caps()
			if caps.Has(imap.CapLoginDisabled) && caps.Has(imap.CapStartTLS) {
				c.Close()
				c, err = imapclient.DialStartTLS(cfg.IMAP, opts)
			}
		}
	case TLSStartTLS:
		c, err = imapclient.DialStartTLS(cfg.IMAP, opts)
	case TLSImplicit:
		c, err = imapclient.DialTLS(cfg.IMAP, opts)
	default:
		return nil, fmt.Errorf("unknown TLS mode %q", mode)
	}
	if err != nil {
		return nil, err
	}
	w.c = c
	if err := c.Login(cfg.To, cfg.ToPass).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("login as %s: %w", cfg.To, err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("select INBOX: %w", err)
	}
	w.next = sel.UIDNext
	if w.next == 0 {
		w.next = 1
	}
	w.mode = "poll"
	if !cfg.Poll && (c.Caps().Has(imap.CapIdle) || c.Caps().Has(imap.CapIMAP4rev2)) {
		w.mode = "idle"
	}
	return w, nil
}

func (w *watcher) close() {
	w.c.Logout().Wait()
	w.c.Close()
}

// watch reports arrivals to tr until ctx ends.
func (w *watcher) watch(ctx context.Context, tr *tracker) error {
	if w.mode == "poll" {
		tick := time.NewTicker(w.cfg.PollInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
			}
			if err := w.c.Noop().Wait(); err != nil {
				return err
			}
			if err := w.fetch(tr); err != nil {
				return err
			}
		}
	}
	for {
		idle, err := w.c.Idle()
		if err != nil {
			return fmt.Errorf("IDLE: %w", err)
		}
		select {
		case <-ctx.Done():
		case <-w.notify:
		case <-w.c.Closed():
		}
		if err := idle.Close(); err != nil {
			return err
		}
		if err := idle.Wait(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := w.fetch(tr); err != nil {
			return err
		}
	}
}

// fetch reads the envelopes of messages from w.next on.
func (w *watcher) fetch(tr *tracker) error {
	var set imap.UIDSet
	set.AddRange(w.next, 0) // next:*
	cmd := w.c.Fetch(set, &imap.FetchOptions{UID: true, Envelope: true})
	for {
		m := cmd.Next()
		if m == nil {
			break
		}
		buf, err := m.Collect()
		if err != nil {
			cmd.Close()
			return err
		}
		now := time.Now()
		if buf.UID < w.next {
			continue // "n:*" names the last message even when n is beyond it
		}
		w.next = buf.UID + 1
		if buf.Envelope != nil {
			if tok := token(buf.Envelope.MessageID, buf.Envelope.Subject); tok != "" {
				tr.arrived(tok, now)
			}
		}
	}
	return cmd.Close()
}

// scanMissing reads every envelope in the INBOX and counts the
// submitted messages among them that tr has not seen arrive.
func (w *watcher) scanMissing(tr *tracker) int {
	var set imap.UIDSet
	set.AddRange(1, 0) // 1:*
	msgs, err := w.c.Fetch(set, &imap.FetchOptions{UID: true, Envelope: true}).Collect()
	if err != nil {
		return 0
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, m := range msgs {
		if m.Envelope == nil {
			continue
		}
		tok := token(m.Envelope.MessageID, m.Envelope.Subject)
		if _, ours := tr.start[tok]; !ours {
			continue
		}
		if _, seen := tr.seen[tok]; !seen {
			n++
		}
	}
	return n
}

// token extracts the run token from a Message-ID or Subject.
func token(msgID, subject string) string {
	if i := strings.Index(msgID, "@mailbench.invalid"); i > 0 {
		return strings.TrimPrefix(msgID[:i], "<")
	}
	if t, ok := strings.CutPrefix(subject, "mailbench "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

// Format writes r as a human-readable summary.
func Format(w io.Writer, r *Result) {
	fmt.Fprintf(w, "smtp %s -> imap %s (%s), %d messages of %d bytes, concurrency %d\n", r.SMTP, r.IMAP, r.Watch, r.Messages, r.Size, r.Concurrency)
	fmt.Fprintf(w, "sent %d, delivered %d, errors %d\n", r.Sent, r.Delivered, r.Errors)
	if r.FirstError != "" {
		fmt.Fprintf(w, "first error: %s\n", r.FirstError)
	}
	fmt.Fprintf(w, "latency ms: p50 %.1f  p90 %.1f  p99 %.1f  (min %.1f, mean %.1f, max %.1f; SMTP alone p50 %.1f)\n",
		r.P50, r.P90, r.P99, r.Min, r.Mean, r.Max, r.SubmitP50)
	fmt.Fprintf(w, "throughput: %.1f messages/s over %.2f s\n", r.Throughput, r.Seconds)
}
