// Package mailnet holds what the mail servers (internal/smtpd,
// internal/gateway) share: waiting on a goroutine of their own for a POST
// call made on the node's event loop, splitting a message's recipients so
// that blind copies stay blind, and telling loopback addresses (where AUTH
// may go without TLS) from others.
//
// Invariants: the loop never waits on a network goroutine (a callback only
// sends on a buffered channel), and a second callback for one call is
// ignored.
package mailnet

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/store/object"
)

// Loop runs functions on the node's event loop and waits for them
// (internal/node.Node satisfies it).
type Loop interface {
	Do(f func()) error
}

// Errors of waiting for POST.
var (
	ErrUnavailable = errors.New("mail system unavailable")
	ErrTimeout     = errors.New("no answer from the mail system in time")
)

// TempFailure is the SMTP reply for a message POST did not store, when a
// retry can succeed, so the client keeps the message: 452 4.3.1 when this
// node's disk is full (RFC 3463: insufficient system storage), 451 4.4.1
// when POST did not answer in time, and 451 4.3.0 for anything else (a
// disk error here, replicas unreachable).
func TempFailure(err error) *smtp.SMTPError {
	reply := func(code int, enh smtp.EnhancedCode, msg string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: msg}
	}
	switch {
	case errors.Is(err, object.ErrFull):
		return reply(452, smtp.EnhancedCode{4, 3, 1}, "Insufficient storage on this node; try again later")
	case errors.Is(err, ErrTimeout):
		return reply(451, smtp.EnhancedCode{4, 4, 1}, "Message not yet stored durably; try again later")
	case errors.Is(err, object.ErrIO):
		return reply(451, smtp.EnhancedCode{4, 3, 0}, "Local storage error; message not stored; try again later")
	}
	return reply(451, smtp.EnhancedCode{4, 3, 0}, "Message not stored; try again later")
}

type result[T any] struct {
	v   T
	err error
}

// Await runs start on the loop and waits, on the calling goroutine, for
// the callback it is given, at most timeout or until closed is closed.
// start reports false when the mail system is missing (ErrUnavailable).
func Await[T any](loop Loop, timeout time.Duration, closed <-chan struct{}, start func(done func(T, error)) bool) (T, error) {
	var zero T
	if loop == nil {
		return zero, ErrUnavailable
	}
	ch := make(chan result[T], 1)
	ok := true
	err := loop.Do(func() {
		ok = start(func(v T, err error) {
			select {
			case ch <- result[T]{v, err}:
			default: // a second callback: the first one counts
			}
		})
	})
	if err != nil {
		return zero, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if !ok {
		return zero, ErrUnavailable
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-t.C:
		return zero, ErrTimeout
	case <-closed:
		return zero, fmt.Errorf("%w: server closed", ErrUnavailable)
	}
}

// RecipientGroups splits a message's community recipients into the
// groups POST sends one notification to. Every recipient of a
// notification sees its whole (signed) recipient list, so a blind copy
// (an envelope recipient not named in To or Cc, RFC 5322 section 3.6.3)
// must not share one: the recipients the headers name form one group,
// and each blind recipient gets a group of their own. The split depends
// only on the message and the envelope, so a client's retry makes the
// same groups, hence the same message ids, and nobody gets a second copy.
// If the headers cannot be parsed, every recipient is treated as blind.
func RecipientGroups(msg []byte, rcpts []string) [][]string {
	named := map[string]bool{}
	if m, err := mail.ReadMessage(bytes.NewReader(msg)); err == nil {
		for _, field := range []string{"To", "Cc"} {
			list, err := m.Header.AddressList(field)
			if err != nil {
				continue
			}
			for _, a := range list {
				if c, err := identity.CanonicalAddress(a.Address); err == nil {
					named[c] = true
				}
			}
		}
	}
	var visible []string
	var groups [][]string
	for _, r := range rcpts {
		if named[r] {
			visible = append(visible, r)
		} else {
			groups = append(groups, []string{r})
		}
	}
	if len(visible) > 0 {
		groups = append([][]string{visible}, groups...)
	}
	return groups
}

// IsLoopback reports whether host:port names this machine: "localhost" or
// a loopback IP address.
func IsLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}
