package post

import (
	"fmt"
	"io"
	"mime"
	"net/mail"
	"slices"
	"strings"

	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// pending handles one member of the user's pending set: verify it, append
// the message to INBOX exactly once, then release the member.
func (a *Account) pending(member []byte) {
	x := a.x
	mk := past.MemberKey(member)
	if !a.ready || a.retired || a.inflight[mk] {
		return
	}
	s, err := DecodeSealed(member)
	if err != nil {
		a.reject(mk, err)
		return
	}
	n, err := s.Open(a.keys, x.node.Verifier)
	if err != nil {
		a.reject(mk, err)
		return
	}
	a.inflight[mk] = true
	if a.delivered[n.ID] {
		x.stats.Duplicates++
		a.release(mk)
		return
	}
	inbox := a.folders["INBOX"]
	if inbox == nil {
		delete(a.inflight, mk)
		return
	}
	// Read the body first: a message is taken in only once it can be read,
	// and its From is checked against the signed sender.
	fetchBody(x, n.Body, func(body []byte, chunks [][]byte, err error) {
		if err != nil {
			delete(a.inflight, mk)
			x.env.Log.Info("post: body not readable yet; the next poll retries", "user", a.keys.Address, "err", err)
			return
		}
		a.deliver(mk, n, inbox, body, chunks)
	})
}

// maxRejected bounds the rejected members an account remembers.
const maxRejected = 1 << 16

// reject handles a pending member that failed verification: it is
// counted once, however often polls and pushes bring it back, and
// released with the recipient's receipt (unless Config.KeepRejected), so
// that it does not hold a place in the recipient's queue until its lease
// ends. What fails is the member's bytes, not something that could
// change: a later read would fail the same way.
func (a *Account) reject(mk object.Key, err error) {
	x := a.x
	if !a.rejected[mk] {
		if len(a.rejected) >= maxRejected {
			clear(a.rejected)
		}
		a.rejected[mk] = true
		x.stats.Forged++
		x.env.Log.Warn("post: notification rejected", "user", a.keys.Address, "entry", mk.Short(), "err", err)
	}
	if x.cfg.KeepRejected {
		return
	}
	a.inflight[mk] = true
	a.release(mk)
}

// FlagSenderMismatch marks a message whose From header names someone
// other than the member who signed it (RFC 9051's $Phishing keyword).
const FlagSenderMismatch = "$Phishing"

func (a *Account) deliver(mk object.Key, n *Notification, inbox *Folder, body []byte, chunks [][]byte) {
	x := a.x
	if a.delivered[n.ID] {
		x.stats.Duplicates++
		a.release(mk)
		return
	}
	var flags []string
	gateway := n.Gateway && slices.Contains(x.cfg.Gateways, n.Sender)
	if gateway && isJunk(body) {
		// The gateway's filters judged it junk: file it there.
		if junk := a.folders["Junk"]; junk != nil {
			inbox = junk
		}
	}
	if from := headerFrom(body); !gateway && !strings.EqualFold(from, n.Sender) {
		x.stats.SenderMismatch++
		flags = []string{FlagSenderMismatch}
	}
	uid := inbox.reserved
	inbox.reserved++
	m := &Message{UID: uid, ID: n.ID, Body: n.Body, Date: x.env.Clock.Wall(), Flags: flags}
	a.delivered[n.ID] = true // refuse a second copy while this one is in flight
	inbox.enqueue(Op{Kind: OpAppend, UID: uid, Msg: m}, func(err error) {
		if err != nil {
			delete(a.delivered, n.ID)
			delete(a.inflight, mk)
			x.env.Log.Warn("post: delivery to INBOX failed; will retry", "user", a.keys.Address, "err", err)
			return
		}
		x.stats.Delivered++
		// The body is the sender's object; the recipient archives its own
		// copy, so that the mailbox can be rebuilt without the sender.
		for i, c := range chunks {
			a.archive(object.KindImmutable, n.Body.Chunks[i], c)
		}
		if x.OnDelivered != nil {
			x.OnDelivered(a.keys.Address, n.ID)
		}
		a.release(mk)
	})
}

// release removes a delivered notification from the pending set; only the
// recipient can sign that.
func (a *Account) release(mk object.Key) {
	x := a.x
	r := SignRelease(a.keys, mk)
	proof := wire.MustMarshal(releaseProof{Release: r.Encode(), Cert: a.cert.Bytes()})
	x.past.SetRelease(PendingKey(a.cert.UserID), mk, proof, x.cfg.NotifyLease, func(_ past.InsertResult, err error) {
		delete(a.inflight, mk)
		if err != nil {
			x.env.Log.Info("post: release failed; the next poll retries", "user", a.keys.Address, "err", fmt.Sprint(err))
			return
		}
		x.stats.Released++
	})
}

// headerFrom returns the address in a message's From header: "" unless
// it holds exactly one address. It is parsed as mail clients parse it
// (display names, comments, quoting), so that the address the
// sender-mismatch check compares is the one a client shows: a
// bracketed address in a comment or an unclosed quote does not count.
func headerFrom(msg []byte) string {
	a, err := fromParser.Parse(headerValue(msg, "From"))
	if err != nil {
		return ""
	}
	return a.Address
}

// fromParser reads addresses whatever the charset of the display name:
// the name is not compared, and a name in a charset net/mail does not
// know must not get a member's mail flagged.
var fromParser = &mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// headerValue returns the first header field called name, unfolded.
func headerValue(msg []byte, field string) string {
	// The header ends at the first blank line, whichever line ending it
	// has (a message may mix them).
	var lines []string
	for rest := string(msg); rest != ""; {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		if line = strings.TrimSuffix(line, "\r"); line == "" {
			break
		}
		lines = append(lines, line)
	}
	for i := 0; i < len(lines); i++ {
		name, value, ok := strings.Cut(lines[i], ":")
		// The name exactly, nothing trimmed: with a stray CR or blank
		// around it, net/mail (and so some mail clients) reads another
		// field, or none.
		if !ok || !strings.EqualFold(name, field) {
			continue
		}
		for i+1 < len(lines) && (strings.HasPrefix(lines[i+1], " ") || strings.HasPrefix(lines[i+1], "\t")) {
			i++
			value += lines[i]
		}
		return value
	}
	return ""
}

// JunkHeader is the header a community gateway adds to mail its filters
// judge junk ("yes ..."); such mail is filed in Junk.
const JunkHeader = "X-Epost-Junk"

// isJunk reports whether the message's header section says it is junk.
func isJunk(msg []byte) bool {
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(headerValue(msg, JunkHeader))), "yes")
}
