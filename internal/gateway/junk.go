package gateway

import (
	"bytes"
	"fmt"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dmarc"

	"github.com/epost-mail/epost/internal/post"
)

// Filter is an external junk filter (a Bayesian classifier, rspamd,
// SpamAssassin...). Score is called from an SMTP connection goroutine,
// concurrently, with the message as received; its score adds to the
// checks' score. An error is logged and counts as 0: a broken filter
// must not stop the community's mail.
type Filter interface {
	Score(msg []byte) (float64, error)
}

// JunkPolicy weighs the checks' outcomes into a score; a message whose
// total score (checks plus Filter) reaches Threshold is marked as junk.
type JunkPolicy struct {
	SPFFail, SPFSoftFail float64 // SPF fail, softfail
	DKIMFail             float64 // some DKIM signature broken (not merely absent)
	DMARCFail            float64 // DMARC fail with policy none
	DMARCQuarantine      float64 // DMARC fail with policy quarantine or reject, instead of DMARCFail
	Threshold            float64
}

// DefaultJunkPolicy marks as junk what its own domain disowns (a DMARC
// failure under a quarantine or reject policy), and what fails two checks
// of SPF, DKIM and DMARC; one failure alone (a forwarded message breaking
// SPF, a mailing list breaking DKIM) is not enough.
func DefaultJunkPolicy() JunkPolicy {
	return JunkPolicy{SPFFail: 3, SPFSoftFail: 1, DKIMFail: 3, DMARCFail: 3, DMARCQuarantine: 5, Threshold: 5}
}

func (p JunkPolicy) withDefaults() JunkPolicy {
	if p == (JunkPolicy{}) {
		return DefaultJunkPolicy()
	}
	return p
}

// Score is the checks' part of a message's junk score.
func (p JunkPolicy) Score(v *Verdict) float64 {
	var s float64
	switch v.SPF {
	case spf.Fail:
		s += p.SPFFail
	case spf.SoftFail:
		s += p.SPFSoftFail
	}
	if v.DKIMFailed() {
		s += p.DKIMFail
	}
	if v.DMARC == authres.ResultFail {
		if v.DMARCPolicy == dmarc.PolicyQuarantine || v.DMARCPolicy == dmarc.PolicyReject {
			s += p.DMARCQuarantine
		} else {
			s += p.DMARCFail
		}
	}
	return s
}

// Header names the gateway adds.
const (
	HeaderAuthResults = "Authentication-Results"
	HeaderJunk        = post.JunkHeader
)

// JunkHeaderValue is X-Epost-Junk's value for a message scored score.
func JunkHeaderValue(score float64) string {
	return fmt.Sprintf("yes (score %.1f)", score)
}

// stamp returns msg with the gateway's header fields in front and, first,
// any Authentication-Results naming authservID and any X-Epost-Junk
// removed (RFC 8601 section 5: a forged result must not survive). The
// line ending used is the message's own.
func stamp(msg []byte, authservID string, fields [][2]string) []byte {
	nl := "\r\n"
	if i := bytes.IndexByte(msg, '\n'); i >= 0 && (i == 0 || msg[i-1] != '\r') {
		nl = "\n"
	}
	var out bytes.Buffer
	for _, f := range fields {
		out.WriteString(f[0] + ": " + strings.ReplaceAll(f[1], "\n", nl) + nl)
	}
	rest := msg
	// A header cannot begin with a continuation line (RFC 5322 section
	// 2.2.3). Kept, it would continue the last field written above, and a
	// sender could append results of its choosing to the gateway's own.
	for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			i = len(rest) - 1
		}
		rest = rest[i+1:]
	}
	for len(rest) > 0 {
		// One header field: a line and its continuation lines.
		end := 0
		for {
			i := bytes.IndexByte(rest[end:], '\n')
			if i < 0 {
				end = len(rest)
				break
			}
			end += i + 1
			if end >= len(rest) || (rest[end] != ' ' && rest[end] != '\t') {
				break
			}
		}
		field := rest[:end]
		if len(bytes.TrimRight(field, "\r\n")) == 0 {
			break // the blank line ending the header
		}
		// A line that is no header field stays, and so does the header
		// section: readers (POST's among them) look for fields up to the
		// blank line.
		if !forged(field, authservID) {
			out.Write(field)
		}
		rest = rest[end:]
	}
	out.Write(rest)
	return out.Bytes()
}

// forged reports whether a header field is one only this gateway may add.
func forged(field []byte, authservID string) bool {
	name, value, _ := strings.Cut(string(field), ":")
	name = strings.TrimSpace(name)
	switch {
	case strings.EqualFold(name, HeaderJunk):
		return true
	case strings.EqualFold(name, HeaderAuthResults):
		id, _, err := authres.Parse(strings.ReplaceAll(strings.ReplaceAll(value, "\r", ""), "\n", ""))
		if err != nil {
			// Unparseable: compare the authserv-id by hand.
			id, _, _ = strings.Cut(strings.TrimSpace(value), ";")
			id = strings.TrimSpace(id)
		}
		return strings.EqualFold(strings.TrimSpace(id), authservID)
	}
	return false
}

// fold breaks an Authentication-Results value after each "; " (RFC 5322
// section 2.2.3 folding), keeping lines short.
func fold(v string) string {
	return strings.ReplaceAll(v, "; ", ";\n\t")
}
