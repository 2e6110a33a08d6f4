package imapd

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
)

// needsBody reports whether matching c reads the message bytes (headers,
// text, sent date) rather than only the folder log (flags, dates, size,
// numbers).
func needsBody(c *imap.SearchCriteria) bool {
	if len(c.Header) > 0 || len(c.Body) > 0 || len(c.Text) > 0 || !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
		return true
	}
	for i := range c.Not {
		if needsBody(&c.Not[i]) {
			return true
		}
	}
	for i := range c.Or {
		if needsBody(&c.Or[i][0]) || needsBody(&c.Or[i][1]) {
			return true
		}
	}
	return false
}

// match reports whether a message meets every criterion (RFC 9051
// section 6.4.4). Strings match case-insensitively as substrings.
func match(l *loaded, c *imap.SearchCriteria) bool {
	for _, s := range c.SeqNum {
		if !s.Contains(l.seq) {
			return false
		}
	}
	for _, s := range c.UID {
		if !s.Contains(imap.UID(l.uid)) {
			return false
		}
	}
	if !matchDate(time.UnixMicro(l.msg.Date), c.Since, c.Before) {
		return false
	}
	for _, f := range c.Flag {
		if !slices.Contains(l.msg.Flags, string(canonicalFlag(f))) {
			return false
		}
	}
	for _, f := range c.NotFlag {
		if slices.Contains(l.msg.Flags, string(canonicalFlag(f))) {
			return false
		}
	}
	size := l.msg.Body.Size
	if l.body != nil {
		size = int64(len(l.body))
	}
	if c.Larger != 0 && size <= c.Larger {
		return false
	}
	if c.Smaller != 0 && size >= c.Smaller {
		return false
	}
	if len(c.Header) > 0 || !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
		h := mail.Header{Header: entity(l.body).Header}
		for _, hc := range c.Header {
			if !matchFields(h.FieldsByKey(hc.Key), hc.Value) {
				return false
			}
		}
		if !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
			t, err := h.Date()
			if err != nil || !matchDate(t, c.SentSince, c.SentBefore) {
				return false
			}
		}
	}
	if len(c.Text)+len(c.Body) > 0 {
		view := mimeView(l.body)
		for _, s := range c.Text {
			if !matchEntity(entity(view), s, true) {
				return false
			}
		}
		for _, s := range c.Body {
			if !matchEntity(entity(view), s, false) {
				return false
			}
		}
	}
	for i := range c.Not {
		if match(l, &c.Not[i]) {
			return false
		}
	}
	for i := range c.Or {
		if !match(l, &c.Or[i][0]) && !match(l, &c.Or[i][1]) {
			return false
		}
	}
	return true
}

// matchDate compares dates only, ignoring time and zone (RFC 9051
// section 6.4.4: "disregarding time and timezone").
func matchDate(t, since, before time.Time) bool {
	t = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	if !since.IsZero() && t.Before(since) {
		return false
	}
	if !before.IsZero() && !t.Before(before) {
		return false
	}
	return true
}

// maxMIMEDepth is how deeply multiparts and message/rfc822 parts may nest
// before a message's structure is no longer parsed: each level wraps
// another reader around every byte below it, so a message nested
// thousands deep (a few hundred kilobytes) would cost a FETCH or SEARCH
// minutes of CPU. Real mail nests a handful of levels.
const maxMIMEDepth = 32

// mimeView is what FETCH's MIME parts and SEARCH's text matching parse: msg
// itself, or, when it nests deeper than maxMIMEDepth, msg with a first
// header field saying it is plain text, so that it is served as one
// text/plain part: its raw MIME source, which a client can show and
// SEARCH can match. BODY[], BODY[HEADER] and
// BODY[TEXT] always serve the stored bytes.
func mimeView(msg []byte) []byte {
	e, err := gomessage.Read(bytes.NewReader(msg))
	if e == nil || err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err) {
		return msg
	}
	if !tooDeep(e, 0) {
		return msg
	}
	return append([]byte("Content-Type: text/plain\r\n"), msg...)
}

// tooDeep reports whether e has parts nested deeper than maxMIMEDepth
// below depth. It stops at the first such part, so it reads at most
// maxMIMEDepth readers deep.
func tooDeep(e *gomessage.Entity, depth int) bool {
	if depth > maxMIMEDepth {
		return true
	}
	if mr := e.MultipartReader(); mr != nil {
		for {
			part, err := mr.NextPart()
			if part == nil || err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err) {
				return false
			}
			if tooDeep(part, depth+1) {
				return true
			}
		}
	}
	t, _, _ := e.Header.ContentType()
	if strings.EqualFold(t, "message/rfc822") || strings.EqualFold(t, "message/global") {
		if inner, err := gomessage.Read(e.Body); inner != nil && (err == nil || gomessage.IsUnknownCharset(err) || gomessage.IsUnknownEncoding(err)) {
			return tooDeep(inner, depth+1)
		}
	}
	return false
}

func entity(msg []byte) *gomessage.Entity {
	e, _ := gomessage.Read(bytes.NewReader(msg))
	if e == nil {
		e, _ = gomessage.New(gomessage.Header{}, bytes.NewReader(nil))
	}
	return e
}

func matchFields(fields gomessage.HeaderFields, pattern string) bool {
	if pattern == "" {
		return fields.Len() > 0
	}
	pattern = strings.ToLower(pattern)
	for fields.Next() {
		v, err := fields.Text()
		if err != nil {
			v = fields.Value()
		}
		if strings.Contains(strings.ToLower(v), pattern) {
			return true
		}
	}
	return false
}

// matchEntity looks for pattern in the text parts (and, for TEXT, the
// headers) of a message, decoded.
func matchEntity(e *gomessage.Entity, pattern string, withHeader bool) bool {
	if pattern == "" {
		return true
	}
	if withHeader && matchFields(e.Header.Fields(), pattern) {
		return true
	}
	if mr := e.MultipartReader(); mr != nil {
		for {
			part, err := mr.NextPart()
			if err != nil {
				return false
			}
			if matchEntity(part, pattern, withHeader) {
				return true
			}
		}
	}
	t, _, err := e.Header.ContentType()
	if err != nil && t == "" {
		t = "text/plain"
	}
	if !strings.HasPrefix(t, "text/") && !strings.HasPrefix(t, "message/") {
		return false
	}
	buf, err := io.ReadAll(io.LimitReader(e.Body, 64<<20))
	if err != nil && len(buf) == 0 {
		return false
	}
	return bytes.Contains(bytes.ToLower(buf), bytes.ToLower([]byte(pattern)))
}
