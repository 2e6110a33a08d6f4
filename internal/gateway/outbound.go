package gateway

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"

	"github.com/epost-mail/epost/internal/identity"
)

// Relayer takes a message on toward the Internet: smtpd.Smarthost (a
// provider or another relay), a DirectMX queue, or any other hop. Its
// contract is smtpd.Outbound's: nil only once the hop has taken
// responsibility for the message; an *smtp.SMTPError is a reply to pass
// to the submitting client.
type Relayer interface {
	Relay(from string, to []string, msg []byte) error
}

// DKIMKey is a domain's signing key (RFC 6376 section 3.5: d= Domain,
// s= Selector). The public half is published at
// Selector._domainkey.Domain (see Records). Ed25519 (RFC 8463) and RSA
// keys work; many receivers verify RSA only, so a domain may have both.
type DKIMKey struct {
	Domain, Selector string
	Signer           crypto.Signer
}

// signedHeaders are the fields signed (RFC 6376 section 5.4.1's list);
// fields a message lacks are signed as absent, so they cannot be added.
var signedHeaders = []string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID", "In-Reply-To", "References",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
}

// Outbound is the community's outbound gateway, an smtpd.Outbound: it
// accepts only senders in Domains (a submission server has already
// checked that the sender is its authenticated user; this is the second
// lock on the door, so that a misconfigured server cannot relay for
// strangers), signs each message with every key of the sender's domain,
// and hands it to Next. Safe for concurrent use.
//
// A submitting client that lost the 250 sends the message again; Relay
// remembers the last messages it handed on (by sender, recipients and
// bytes, as POST's message id does) and does not hand one on twice.
type Outbound struct {
	// Domains are the community's mail domains.
	Domains []string
	// Keys sign mail from their domains; a domain without a key sends
	// unsigned mail.
	Keys []DKIMKey
	// Next takes the signed message on.
	Next Relayer

	mu     sync.Mutex
	seen   map[[32]byte]bool
	recent [][32]byte // FIFO of seen, at most outboundMemory
}

// outboundMemory is how many messages Outbound remembers for
// deduplication.
const outboundMemory = 10000

// Relay implements smtpd.Outbound.
func (o *Outbound) Relay(from string, to []string, msg []byte) error {
	addr, err := identity.CanonicalAddress(from)
	if err != nil || !slices.Contains(o.domains(), domainOf(addr)) {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: fmt.Sprintf("Relay access denied: sender <%s> is not in the community's domains", from)}
	}
	if len(to) == 0 {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No recipients"}
	}
	if o.Next == nil {
		return fmt.Errorf("gateway: outbound: no next hop configured")
	}
	if len(msg) > 0 && (msg[0] == ' ' || msg[0] == '\t') {
		// A header cannot begin with a continuation line (RFC 5322
		// section 2.2.3): the header prepended to it would take the line
		// in, and the DKIM signature would no longer verify.
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
			Message: "Malformed message: the header begins with a continuation line"}
	}
	id := outboundID(addr, to, msg)
	o.mu.Lock()
	dup := o.seen[id]
	o.mu.Unlock()
	if dup {
		return nil
	}
	signed, err := o.sign(domainOf(addr), msg)
	if err != nil {
		return err
	}
	if err := o.Next.Relay(addr, to, signed); err != nil {
		return err
	}
	o.remember(id)
	return nil
}

func (o *Outbound) domains() []string {
	out := make([]string, 0, len(o.Domains))
	for _, d := range o.Domains {
		out = append(out, strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), ".")))
	}
	return out
}

// sign prepends a DKIM-Signature for each of domain's keys (RFC 6376
// section 5), relaxed/relaxed so that ordinary re-wrapping in transit
// does not break it.
func (o *Outbound) sign(domain string, msg []byte) ([]byte, error) {
	for _, k := range o.Keys {
		if !strings.EqualFold(strings.TrimSuffix(k.Domain, "."), domain) {
			continue
		}
		var b bytes.Buffer
		err := dkim.Sign(&b, bytes.NewReader(msg), &dkim.SignOptions{
			Domain: domain, Selector: k.Selector, Signer: k.Signer,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             signedHeaders,
		})
		if err != nil {
			return nil, fmt.Errorf("gateway: DKIM signing for %s (selector %s): %w", domain, k.Selector, err)
		}
		msg = b.Bytes()
	}
	return msg, nil
}

func (o *Outbound) remember(id [32]byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.seen == nil {
		o.seen = map[[32]byte]bool{}
	}
	if o.seen[id] {
		return
	}
	if len(o.recent) >= outboundMemory {
		delete(o.seen, o.recent[0])
		o.recent = o.recent[1:]
	}
	o.seen[id] = true
	o.recent = append(o.recent, id)
}

// outboundID identifies a submission: sender, sorted recipients, bytes.
func outboundID(from string, to []string, msg []byte) [32]byte {
	rcpts := slices.Clone(to)
	for i, r := range rcpts {
		if c, err := identity.CanonicalAddress(r); err == nil {
			rcpts[i] = c
		}
	}
	slices.Sort(rcpts)
	h := sha256.New()
	h.Write([]byte("epost/gateway-outbound/v1\x00" + from + "\x00"))
	for _, r := range slices.Compact(rcpts) {
		h.Write([]byte(r + "\x00"))
	}
	h.Write(msg)
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}
