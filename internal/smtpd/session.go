package smtpd

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/net/idna"

	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/mailnet"
	"github.com/epost-mail/epost/internal/post"
)

// session is one SMTP connection's state. go-smtp calls its methods from
// the connection's goroutine, one at a time; a STARTTLS starts a new
// session.
type session struct {
	s        *Server
	conn     *smtp.Conn
	remote   string // limiter key
	loopback bool

	user      string // authenticated address; "" before AUTH
	from      string
	utf8      bool     // MAIL said SMTPUTF8 (RFC 6531)
	size      int64    // the size MAIL declared (SIZE=), 0 if none
	community []string // recipients delivered by POST
	outbound  []string // recipients handed to Outbound
}

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
)

func smtpErr(code int, enh smtp.EnhancedCode, format string, args ...any) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: replyText(fmt.Sprintf(format, args...))}
}

// maxReplyText bounds a reply's text: a reply line is at most 512 octets
// (RFC 5321 section 4.5.3.1.5), and addresses echoed come from the client.
const maxReplyText = 400

// replyText makes a reply's text safe to send: replies are ASCII (RFC
// 5321 section 4.2.1; UTF-8 only once the client opts in, RFC 6531), and
// the addresses in them are the client's bytes, so anything else, an
// invalid byte or a control character above all, is written as \xNN.
func replyText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < maxReplyText; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "\\x%02x", c)
		}
	}
	if b.Len() >= maxReplyText {
		return b.String()[:maxReplyText] + "..."
	}
	return b.String()
}

// authAllowed: passwords only over TLS, or on loopback (RFC 4954
// section 4: a server should not offer plaintext mechanisms without a
// protected channel).
func (ss *session) authAllowed() bool {
	if ss.loopback {
		return true
	}
	_, tlsOn := ss.conn.TLSConnectionState()
	return tlsOn
}

// AuthMechanisms implements smtp.AuthSession: PLAIN and LOGIN, only where
// a password may be sent.
func (ss *session) AuthMechanisms() []string {
	if ss.s.cfg.Auth == nil || !ss.authAllowed() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth implements smtp.AuthSession.
func (ss *session) Auth(mech string) (sasl.Server, error) {
	if ss.s.cfg.Auth == nil {
		return nil, smtp.ErrAuthUnsupported
	}
	if !ss.authAllowed() {
		// RFC 4954 section 6.
		return nil, smtpErr(538, smtp.EnhancedCode{5, 7, 11}, "Encryption required: use STARTTLS first")
	}
	if err := ss.lockedOut(""); err != nil {
		return nil, err
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			return ss.login(identity, username, password)
		}), nil
	case sasl.Login:
		return newLoginServer(func(username, password string) error {
			return ss.login("", username, password)
		}), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// lockedOut refuses AUTH while the remote address, or username when it is
// known (non-empty), is locked out.
func (ss *session) lockedOut(username string) error {
	d := ss.s.limiter.lockedFor(ss.remote)
	if username != "" {
		d = max(d, ss.s.limiter.lockedFor(userKey(username)))
	}
	if d <= 0 {
		return nil
	}
	ss.s.stats.authLocked.Add(1)
	secs := int(math.Ceil(d.Seconds()))
	return smtpErr(454, smtp.EnhancedCode{4, 7, 0}, "Too many failed logins; try again in %d s", secs)
}

// login checks credentials; a failure counts against the remote address
// and the username.
func (ss *session) login(authzid, username, password string) error {
	if err := ss.lockedOut(username); err != nil {
		return err
	}
	addr, ok := ss.s.cfg.Auth.Check(username, password)
	if ok {
		if c, err := identity.CanonicalAddress(addr); err == nil {
			addr = c
		} else {
			ok = false
		}
	}
	if ok && authzid != "" && authzid != username {
		// Acting as someone else (RFC 4616's authorization identity) is
		// allowed only as oneself.
		if c, err := identity.CanonicalAddress(authzid); err != nil || c != addr {
			ok = false
		}
	}
	if !ok {
		ss.s.stats.authFailed.Add(1)
		cfg := ss.s.limiter.cfg
		lock := max(ss.s.limiter.fail(ss.remote, cfg.FreePerIP), ss.s.limiter.fail(userKey(username), cfg.Free))
		ss.s.cfg.Log.Warn("smtpd: authentication failed", "remote", ss.remote, "username", username,
			"lockout", lock.Round(time.Second))
		return smtp.ErrAuthFailed
	}
	ss.s.stats.authOK.Add(1)
	ss.user = addr
	return nil
}

func (ss *session) refuse(err *smtp.SMTPError) error {
	ss.s.stats.refused.Add(1)
	return err
}

// refuseRelay refuses what would make the node an open relay.
func (ss *session) refuseRelay(err *smtp.SMTPError) error {
	ss.s.stats.relayRefused.Add(1)
	return ss.refuse(err)
}

// Mail implements smtp.Session. RFC 6409 section 6.1: the submission
// server may, and here must, insist that the envelope sender is the
// authenticated user.
func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	ss.Reset()
	if ss.user == "" {
		return ss.refuseRelay(smtpErr(530, smtp.EnhancedCode{5, 7, 0}, "Authentication required"))
	}
	addr, err := identity.CanonicalAddress(from)
	if err != nil && opts != nil && opts.UTF8 {
		// The user's own address with its domain in Unicode.
		if local, domain, ok := splitIDNA(from); ok && isASCII(local) {
			addr, err = identity.CanonicalAddress(local + "@" + domain)
		}
	}
	if err != nil || addr != ss.user {
		return ss.refuseRelay(smtpErr(553, smtp.EnhancedCode{5, 7, 1},
			"Sender <%s> is not the authenticated user <%s>", from, ss.user))
	}
	ss.from = addr
	if opts != nil {
		ss.size = opts.Size
		ss.utf8 = opts.UTF8
	}
	return nil
}

// community reports whether addr is in the community's domains.
func (ss *session) inCommunity(addr string) bool {
	domain := addr[strings.LastIndexByte(addr, '@')+1:]
	if len(ss.s.cfg.Domains) == 0 {
		return domain == ss.user[strings.LastIndexByte(ss.user, '@')+1:]
	}
	return slices.Contains(ss.s.cfg.Domains, domain)
}

// Rcpt implements smtp.Session: community members are checked with POST
// at once (an unknown one is refused here, with a clear reply, rather than
// bounced later); others need an Outbound gateway.
func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if ss.user == "" || ss.from == "" {
		return ss.refuse(smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "MAIL first"))
	}
	addr, eai, err := ss.recipient(to)
	if err != nil {
		return ss.refuse(err.(*smtp.SMTPError))
	}
	if slices.Contains(ss.community, addr) || slices.Contains(ss.outbound, addr) {
		return nil
	}
	if eai && ss.inCommunity(addr) {
		return ss.refuse(smtpErr(550, smtp.EnhancedCode{5, 1, 1},
			"No such user: <%s>; community addresses are ASCII", to))
	}
	if !ss.inCommunity(addr) {
		if ss.s.cfg.Outbound == nil {
			return ss.refuseRelay(smtpErr(550, smtp.EnhancedCode{5, 7, 1},
				"Relay not configured: <%s> is outside the community", addr))
		}
		ss.outbound = append(ss.outbound, addr)
		return nil
	}
	ok, err := ss.s.lookupUser(addr)
	if err != nil {
		ss.s.stats.lookupFailed.Add(1)
		ss.s.cfg.Log.Info("smtpd: recipient check failed", "rcpt", addr, "err", err)
		return smtpErr(451, smtp.EnhancedCode{4, 4, 3}, "Cannot check <%s> now; try again later", addr)
	}
	if !ok {
		return ss.refuse(smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "No such user: <%s> is not a member of the community", addr))
	}
	if ss.s.overQuota(addr, ss.size) {
		// Temporary, as a full mailbox is everywhere (RFC 3463 4.2.2):
		// the client retries, and the user may make room meanwhile.
		ss.s.stats.overQuota.Add(1)
		return smtpErr(452, smtp.EnhancedCode{4, 2, 2}, "Mailbox full: <%s> is over quota; try again later", addr)
	}
	ss.community = append(ss.community, addr)
	return nil
}

// recipient turns RCPT's address into the one to deliver to: a community
// member's canonical address, or an outside address. With SMTPUTF8 (RFC
// 6531) an address may be internationalised: its domain is taken in its
// ASCII form (so "bob@bücher.example" reaches a member
// "bob@xn--bcher-kva.example"), and a non-ASCII local part (eai) can only
// be outside the community, whose addresses are ASCII.
func (ss *session) recipient(to string) (addr string, eai bool, err error) {
	addr, cerr := identity.CanonicalAddress(to)
	if cerr == nil {
		return addr, false, nil
	}
	bad := func(why any) (string, bool, error) {
		return "", false, smtpErr(553, smtp.EnhancedCode{5, 1, 3}, "Bad recipient address <%s>: %v", to, why)
	}
	if isASCII(to) {
		return bad(cerr)
	}
	if !ss.utf8 {
		// RFC 6531 section 3.5.
		return "", false, smtpErr(553, smtp.EnhancedCode{5, 6, 7},
			"Non-ASCII address <%s> needs MAIL FROM with SMTPUTF8", to)
	}
	local, domain, ok := splitIDNA(to)
	if !ok {
		return bad("no '@', or a bad domain")
	}
	if isASCII(local) {
		addr, cerr := identity.CanonicalAddress(local + "@" + domain)
		if cerr != nil {
			return bad(cerr)
		}
		return addr, false, nil
	}
	if why := badLocalPart(local); why != "" {
		return bad(why)
	}
	return local + "@" + domain, true, nil
}

// splitIDNA splits an address at its last '@' and gives its domain in
// ASCII (IDNA) form, checked as a member's domain is.
func splitIDNA(addr string) (local, domain string, ok bool) {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return "", "", false
	}
	domain, err := idna.Lookup.ToASCII(addr[at+1:])
	if err == nil {
		_, err = identity.CanonicalAddress("x@" + domain)
	}
	return addr[:at], domain, err == nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// badLocalPart checks an internationalised local part as RFC 6531
// section 3.3 extends RFC 5321's dot-string (a quoted string is not
// taken): atext and non-ASCII UTF-8, at most 64 octets.
func badLocalPart(local string) string {
	switch {
	case !utf8.ValidString(local):
		return "local part is not UTF-8"
	case len(local) > 64:
		return "local part over 64 octets"
	case local == "" || local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, ".."):
		return "empty local part, or a leading, trailing or doubled '.'"
	}
	for _, r := range local {
		if r < 0x80 && !(r < 0x7f && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("!#$%&'*+-/=?^_`{|}~.", r))) {
			return fmt.Sprintf("character %q not allowed in the local part", r)
		}
		if r >= 0x80 && !unicode.IsGraphic(r) {
			return fmt.Sprintf("character %U not allowed in the local part", r)
		}
	}
	return ""
}

// Data implements smtp.Session: 250 (a nil return) only once the message
// is durably stored; see the package comment.
func (ss *session) Data(r io.Reader) error {
	if ss.user == "" || ss.from == "" {
		return ss.refuse(smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "MAIL first"))
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
	n := len(ss.community) + len(ss.outbound)
	if !ss.s.senders.take(ss.user, n) {
		ss.s.stats.rateLimited.Add(1)
		ss.s.stats.tempFailed.Add(1)
		ss.s.cfg.Log.Warn("smtpd: sending rate exceeded", "user", ss.user, "recipients", n)
		return smtpErr(451, smtp.EnhancedCode{4, 7, 1}, "Sending rate exceeded; try again later")
	}
	if stored, err := ss.deliver(msg); err != nil {
		if !stored {
			ss.s.senders.refund(ss.user, n) // nothing went anywhere
		}
		return err
	}
	ss.s.stats.accepted.Add(1)
	ss.s.cfg.Log.Info("smtpd: message accepted", "from", ss.from, "community", len(ss.community),
		"outbound", len(ss.outbound), "bytes", len(msg))
	return nil
}

// deliver hands msg to POST, then to the gateway; stored reports whether
// POST stored it for someone.
func (ss *session) deliver(msg []byte) (stored bool, err error) {
	if len(ss.community) > 0 {
		if err := ss.s.send(ss.from, mailnet.RecipientGroups(msg, ss.community), msg); err != nil {
			return false, ss.sendFailed(err)
		}
		stored = true
	}
	if len(ss.outbound) > 0 {
		if err := ss.s.cfg.Outbound.Relay(ss.from, ss.outbound, msg); err != nil {
			var se *smtp.SMTPError
			if errors.As(err, &se) {
				if se.Code >= 500 {
					ss.s.stats.refused.Add(1)
				} else {
					ss.s.stats.tempFailed.Add(1)
				}
				return stored, se
			}
			ss.s.stats.tempFailed.Add(1)
			ss.s.cfg.Log.Warn("smtpd: outbound relay failed", "from", ss.from, "err", err)
			return stored, smtpErr(451, smtp.EnhancedCode{4, 4, 0}, "Outbound gateway unavailable; try again later")
		}
	}
	return stored, nil
}

// sendFailed maps a POST failure to a reply: permanent only when retrying
// cannot help; everything else is a 4xx, so the client keeps the message.
func (ss *session) sendFailed(err error) error {
	ss.s.cfg.Log.Warn("smtpd: message not stored", "from", ss.from, "err", err)
	switch {
	case errors.Is(err, post.ErrUnknownRcpt):
		return ss.refuse(smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "A recipient is not a member of the community: %v", err))
	case errors.Is(err, identity.ErrBadAddress):
		return ss.refuse(smtpErr(553, smtp.EnhancedCode{5, 1, 3}, "Bad address: %v", err))
	}
	ss.s.stats.tempFailed.Add(1)
	return mailnet.TempFailure(err)
}

// Reset implements smtp.Session: the transaction goes, the login stays.
func (ss *session) Reset() {
	ss.from, ss.size, ss.utf8 = "", 0, false
	ss.community = nil
	ss.outbound = nil
}

// Logout implements smtp.Session.
func (ss *session) Logout() error { return nil }
