package gateway

import (
	"errors"
	"fmt"
	"github.com/epost-mail/epost/internal/mailnet"
	"io"
	"net"
	"slices"

	"github.com/emersion/go-smtp"

	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/post"
)

// session is one SMTP connection's state. go-smtp calls its methods from
// the connection's goroutine, one at a time.
type session struct {
	s    *Server
	conn *smtp.Conn
	key  string // limiter key
	ip   net.IP

	mail  bool   // MAIL accepted
	from  string // envelope sender; "" for the null reverse-path
	rcpts []string
}

var _ smtp.Session = (*session)(nil)

func smtpErr(code int, enh smtp.EnhancedCode, format string, args ...any) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: fmt.Sprintf(format, args...)}
}

func (ss *session) refuse(err *smtp.SMTPError) error {
	ss.s.stats.refused.Add(1)
	return err
}

// Mail implements smtp.Session. Any sender is allowed, including the null
// reverse-path of a bounce (RFC 5321 section 4.5.5); the client's message
// rate is checked here, before it sends anything large.
func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	ss.Reset()
	if !ss.s.messages.take(ss.key) {
		ss.s.stats.rateLimited.Add(1)
		ss.s.cfg.Log.Warn("gateway: message rate exceeded", "remote", ss.key)
		return smtpErr(450, smtp.EnhancedCode{4, 7, 1}, "Too many messages from your address; try again later")
	}
	if from != "" {
		addr, err := identity.CanonicalAddress(from)
		if err != nil {
			return ss.refuse(smtpErr(553, smtp.EnhancedCode{5, 1, 7}, "Bad sender address <%s>", from))
		}
		from = addr
	}
	ss.mail, ss.from = true, from
	return nil
}

// Rcpt implements smtp.Session: only members in the community's domains
// (RFC 5321 section 3.6.2: never a relay).
func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if !ss.mail {
		return ss.refuse(smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "MAIL first"))
	}
	addr, err := identity.CanonicalAddress(to)
	if err != nil {
		return ss.refuse(smtpErr(553, smtp.EnhancedCode{5, 1, 3}, "Bad recipient address <%s>", to))
	}
	if slices.Contains(ss.rcpts, addr) {
		return nil
	}
	if !slices.Contains(ss.s.cfg.Domains, domainOf(addr)) {
		ss.s.stats.relayRefused.Add(1)
		return ss.refuse(smtpErr(550, smtp.EnhancedCode{5, 7, 1}, "Relay access denied: <%s> is not in a domain this server accepts mail for", addr))
	}
	ok, err := ss.s.lookupUser(addr)
	if err != nil {
		ss.s.stats.lookupFailed.Add(1)
		ss.s.cfg.Log.Info("gateway: recipient check failed", "rcpt", addr, "err", err)
		return smtpErr(451, smtp.EnhancedCode{4, 4, 3}, "Cannot check <%s> now; try again later", addr)
	}
	if !ok {
		return ss.refuse(smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "No such user: <%s>", addr))
	}
	ss.rcpts = append(ss.rcpts, addr)
	return nil
}

// Data implements smtp.Session: 250 (a nil return) only once the message
// is durably stored; see the package comment.
func (ss *session) Data(r io.Reader) error {
	if !ss.mail || len(ss.rcpts) == 0 {
		return ss.refuse(smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "RCPT first"))
	}
	msg, err := io.ReadAll(r) // go-smtp's reader stops at MaxMessageBytes
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			if se.Code >= 500 {
				ss.s.stats.refused.Add(1)
			}
			if se.Code == smtp.ErrDataTooLarge.Code {
				ss.s.stats.tooLarge.Add(1)
			}
			return se
		}
		return err
	}
	if int64(len(msg)) > ss.s.cfg.MaxMessageBytes {
		ss.s.stats.tooLarge.Add(1)
		return ss.refuse(smtp.ErrDataTooLarge)
	}
	env := Envelope{IP: ss.ip, Helo: ss.conn.Hostname(), From: ss.from}
	v, err := ss.s.checks(env, msg)
	if err != nil || v.Temporary() {
		ss.s.stats.tempFailed.Add(1)
		ss.s.cfg.Log.Info("gateway: checks inconclusive", "remote", ss.key, "err", err)
		return smtpErr(451, smtp.EnhancedCode{4, 4, 3}, "Cannot check the message's authentication now; try again later")
	}
	score := ss.s.cfg.Junk.Score(&v)
	if f := ss.s.cfg.Filter; f != nil {
		fs, err := f.Score(msg)
		if err != nil {
			ss.s.cfg.Log.Warn("gateway: junk filter failed", "err", err)
		} else {
			score += fs
		}
	}
	fields := [][2]string{{HeaderAuthResults, fold(v.AuthenticationResults(ss.s.cfg.Hostname, env))}}
	junk := score >= ss.s.cfg.Junk.Threshold
	if junk {
		fields = append([][2]string{{HeaderJunk, JunkHeaderValue(score)}}, fields...)
	}
	stamped := stamp(msg, ss.s.cfg.Hostname, fields)
	if err := ss.s.inject(mailnet.RecipientGroups(stamped, ss.rcpts), stamped); err != nil {
		return ss.injectFailed(err)
	}
	ss.s.stats.accepted.Add(1)
	if junk {
		ss.s.stats.junk.Add(1)
	}
	ss.s.cfg.Log.Info("gateway: message accepted", "remote", ss.key, "from", ss.from,
		"recipients", len(ss.rcpts), "bytes", len(msg), "spf", v.SPF, "dmarc", v.DMARC, "score", score)
	return nil
}

// injectFailed maps a POST failure to a reply: permanent only when a
// retry cannot help; everything else is a 4xx, so the sender retries.
func (ss *session) injectFailed(err error) error {
	ss.s.cfg.Log.Warn("gateway: message not stored", "from", ss.from, "err", err)
	if errors.Is(err, post.ErrUnknownRcpt) {
		return ss.refuse(smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "A recipient is not a member of the community"))
	}
	ss.s.stats.tempFailed.Add(1)
	return mailnet.TempFailure(err)
}

// Reset implements smtp.Session.
func (ss *session) Reset() {
	ss.mail, ss.from, ss.rcpts = false, "", nil
}

// Logout implements smtp.Session.
func (ss *session) Logout() error { return nil }
