package smtpd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Smarthost is an Outbound that relays through another SMTP server: the
// community's gateway node, or a provider's submission service (RFC
// 6409). Mail and password never cross a network in the clear: unless
// the smarthost is on loopback, the connection is TLS (implicit, or
// STARTTLS, which is then required), with the certificate verified.
type Smarthost struct {
	// Addr is the smarthost's host:port.
	Addr string
	// TLS configures the TLS client; nil verifies the host name of Addr
	// against the system roots.
	TLS *tls.Config
	// ImplicitTLS connects with TLS from the start (port 465, RFC 8314)
	// instead of STARTTLS.
	ImplicitTLS bool
	// Username and Password, when set, log in with AUTH PLAIN.
	Username, Password string
	// Hostname is the name sent in EHLO. Default "localhost".
	Hostname string
	// Timeout bounds connecting and each command. Default 2 min.
	Timeout time.Duration
}

var _ Outbound = (*Smarthost)(nil)

// Relay implements Outbound. The smarthost's replies to MAIL, RCPT and
// DATA come back as *smtp.SMTPError, which the submission server passes
// on; trouble connecting, with TLS or with the smarthost's login becomes
// a plain error, which the submission server answers with 451 (the
// client retries).
//
// A smarthost on loopback without TLS configured is spoken to in the
// clear (a local relay); set TLS to insist on STARTTLS there too.
//
// Every recipient must be accepted: one refused recipient refuses the
// message (a submission reply cannot be partial).
func (h *Smarthost) Relay(from string, to []string, msg []byte) error {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	host, _, err := net.SplitHostPort(h.Addr)
	if err != nil {
		return fmt.Errorf("smtpd: smarthost %q: %w", h.Addr, err)
	}
	tc := h.TLS
	if tc == nil {
		tc = &tls.Config{ServerName: host}
	}
	d := net.Dialer{Timeout: timeout}
	var conn net.Conn
	if h.ImplicitTLS {
		conn, err = tls.DialWithDialer(&d, "tcp", h.Addr, tc)
	} else {
		conn, err = d.Dial("tcp", h.Addr)
	}
	if err != nil {
		return fmt.Errorf("smtpd: smarthost %s: %w", h.Addr, err)
	}
	var c *smtp.Client
	if h.ImplicitTLS || (h.TLS == nil && isLoopback(conn.RemoteAddr())) {
		c = smtp.NewClient(conn)
	} else if c, err = smtp.NewClientStartTLS(conn, tc); err != nil {
		conn.Close()
		return fmt.Errorf("smtpd: smarthost %s: STARTTLS: %w", h.Addr, plain(err))
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = timeout, timeout
	name := h.Hostname
	if name == "" {
		name = "localhost"
	}
	if err := c.Hello(name); err != nil {
		return fmt.Errorf("smtpd: smarthost %s: EHLO: %w", h.Addr, plain(err))
	}
	if h.Username != "" {
		if err := c.Auth(sasl.NewPlainClient("", h.Username, h.Password)); err != nil {
			return fmt.Errorf("smtpd: smarthost %s: AUTH: %w", h.Addr, plain(err))
		}
	}
	// An internationalised address needs SMTPUTF8 (RFC 6531); go-smtp
	// refuses to send it to a smarthost that lacks the extension, and
	// the client gets a 451 rather than a bounce it cannot act on.
	utf8 := !isASCII(from)
	for _, rc := range to {
		utf8 = utf8 || !isASCII(rc)
	}
	if err := c.Mail(from, &smtp.MailOptions{Size: int64(len(msg)), UTF8: utf8}); err != nil {
		return err
	}
	for _, rc := range to {
		if err := c.Rcpt(rc, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	c.Quit()
	return nil
}

// plain hides an *smtp.SMTPError's code, so that the smarthost's reply to
// EHLO, STARTTLS or AUTH (its business with us, not the client's) becomes
// a 451 rather than, say, a 535 that would tell the client its own
// password is wrong.
func plain(err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return fmt.Errorf("%d %s", se.Code, se.Message)
	}
	return err
}
