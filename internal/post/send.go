package post

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"

	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/past"
)

// Send stores a message from a user of this node for recipients in the
// community: the body, encrypted once with a random key, and a sealed
// notification in each recipient's pending set. done(nil) means all of it
// is durably stored at the replica sets: the message will be delivered
// even if this node dies now. A retry of the same message (same sender,
// recipients and bytes) carries the same message id, so recipients keep
// one copy.
func (x *Post) Send(from string, recipients []string, msg []byte, done func(error)) {
	x.send(from, recipients, msg, false, done)
}

// Inject stores mail a gateway brought in from the Internet, for
// community recipients: gw is the gateway's own user on this node. The
// body is encrypted convergently (the key is a hash of the content), so
// the same message to many members, typically spam, is stored once; the
// notifications say so (Gateway), and recipients accept that From then
// names someone outside the community only when gw is one of the
// community's gateways (Config.Gateways).
func (x *Post) Inject(gw string, recipients []string, msg []byte, done func(error)) {
	x.send(gw, recipients, msg, true, done)
}

func (x *Post) send(from string, recipients []string, msg []byte, gateway bool, done func(error)) {
	a := x.users[from]
	if a == nil {
		x.fail(done, fmt.Errorf("%w: %s", ErrNoUser, from))
		return
	}
	if len(recipients) == 0 {
		x.fail(done, errors.New("post: send: no recipients"))
		return
	}
	rcpts := make([]string, 0, len(recipients))
	for _, r := range recipients {
		c, err := identity.CanonicalAddress(r)
		if err != nil {
			x.fail(done, fmt.Errorf("post: send: recipient %q: %w", r, err))
			return
		}
		rcpts = append(rcpts, c)
	}
	sort.Strings(rcpts)
	rcpts = dedup(rcpts)
	var key ContentKey
	var err error
	if gateway {
		key = ConvergentKey(msg)
	} else if key, err = NewContentKey(randReader{x.env.Rand}); err != nil {
		x.fail(done, err)
		return
	}
	chunks, ref := SealBody(key, msg, x.cfg.ChunkSize)
	msgID := MessageID(from, rcpts, msg)
	n, err := SignNotification(fixedReader(msgID[:]), a.keys, a.cert, rcpts, ref, gateway)
	if err != nil {
		x.fail(done, err)
		return
	}
	// Everything in parallel; done once all of it is stored.
	pending := len(chunks) + len(rcpts)
	var firstErr error
	finish := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
		pending--
		if pending > 0 {
			return
		}
		if firstErr != nil {
			x.stats.SendFailed++
			done(firstErr)
			return
		}
		x.stats.Sent++
		done(nil)
	}
	for _, c := range chunks {
		store(x.past, c, x.cfg.MailLease, finish)
	}
	for _, r := range rcpts {
		x.notify(n, r, finish)
	}
}

// notify seals n to one recipient and adds it to their pending set.
func (x *Post) notify(n *Notification, rcpt string, done func(error)) {
	x.recipientCert(rcpt, func(cert *identity.UserCert, err error) {
		if err != nil {
			done(err)
			return
		}
		s, err := Seal(randReader{x.env.Rand}, n, cert, x.node.Key, x.node.Cert)
		if err != nil {
			done(err)
			return
		}
		x.past.SetAdd(PendingKey(cert.UserID), s.Encode(), x.cfg.NotifyLease, func(_ past.InsertResult, err error) {
			if err != nil {
				err = fmt.Errorf("post: notify %s: %w", rcpt, err)
			}
			done(err)
		})
	})
}

// recipientCert finds a community member's certificate: local users
// directly, others from the network (the highest valid version any
// replica holds, checked against the CA).
func (x *Post) recipientCert(addr string, done func(*identity.UserCert, error)) {
	if a := x.users[addr]; a != nil {
		done(a.cert, nil)
		return
	}
	x.past.LookupMutable(CertKey(id.ForUser(addr)), func(res past.MutableResult, err error) {
		if errors.Is(err, past.ErrNotFound) {
			done(nil, fmt.Errorf("%w: %s", ErrUnknownRcpt, addr))
			return
		}
		if err != nil {
			done(nil, err)
			return
		}
		for _, m := range res.Versions {
			if c, err := x.node.Verifier.VerifyUser(m.Data, addr); err == nil {
				done(c, nil)
				return
			}
		}
		done(nil, fmt.Errorf("%w: %s: published certificate invalid", ErrUnknownRcpt, addr))
	})
}

// LookupUser reports whether addr is a member with a published
// certificate (SMTP's RCPT check).
func (x *Post) LookupUser(addr string, done func(bool, error)) {
	x.recipientCert(addr, func(_ *identity.UserCert, err error) {
		if errors.Is(err, ErrUnknownRcpt) {
			done(false, nil)
			return
		}
		done(err == nil, err)
	})
}

func (x *Post) fail(done func(error), err error) {
	x.stats.SendFailed++
	x.env.Clock.AfterFunc(0, func() { done(err) })
}

// MessageID is a message's id: deterministic in what is sent (sender,
// sorted canonical recipients, bytes), so a client's retry of one message
// is recognised as the same message.
func MessageID(from string, rcpts []string, msg []byte) [16]byte {
	h := sha256.New()
	h.Write([]byte("epost/post-message-id/v1\x00" + from + "\x00"))
	for _, r := range rcpts {
		h.Write([]byte(r + "\x00"))
	}
	h.Write(msg)
	var out [16]byte
	copy(out[:], h.Sum(nil))
	return out
}

// fixedReader yields b, then zeros: it hands SignNotification the
// message id.
type fixedReader []byte

func (f fixedReader) Read(p []byte) (int, error) {
	n := copy(p, f)
	clear(p[n:])
	return len(p), nil
}

func dedup(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// FetchCert finds a member's certificate, as Send does.
func (x *Post) FetchCert(addr string, done func(*identity.UserCert, error)) {
	x.recipientCert(addr, done)
}
