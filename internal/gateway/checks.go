package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// Resolver is the DNS the inbound checks use: net.DefaultResolver in
// production, a fake in tests. It is what the SPF library needs (its
// spf.DNSResolver); DKIM and DMARC use LookupTXT only. A name that does not
// exist should be reported as a *net.DNSError with IsNotFound set, a
// temporary failure as one with IsTemporary set.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

var (
	_ Resolver        = (*net.Resolver)(nil)
	_ spf.DNSResolver = Resolver(nil)
)

// Envelope is what the checks know of a message besides its bytes: the
// connecting client's address, its HELO name and the envelope sender
// (empty for a bounce, RFC 5321 section 4.5.5).
type Envelope struct {
	IP   net.IP
	Helo string
	From string
}

// Verdict is the outcome of the inbound checks on one message.
type Verdict struct {
	// SPF is the SPF result for the envelope sender's domain (or, for a
	// bounce, the HELO name; RFC 7208 section 2.4); SPFDomain that domain.
	SPF       spf.Result
	SPFDomain string
	// DKIM has one entry per signature checked (RFC 6376 section 6).
	DKIM []DKIMResult
	// FromDomain is the domain of the header From (RFC 5322), which DMARC
	// protects; empty if there is not exactly one address.
	FromDomain string
	// DMARC is the DMARC result (RFC 7489 section 3): pass when SPF or a
	// DKIM signature passed for a domain aligned with FromDomain; fail
	// otherwise, if FromDomain publishes a policy; none if it does not.
	DMARC authres.ResultValue
	// DMARCPolicy is the policy FromDomain asks for on failure.
	DMARCPolicy dmarc.Policy
}

// DKIMResult is one DKIM signature's outcome.
type DKIMResult struct {
	Domain string // the signature's d=
	Value  authres.ResultValue
	Reason string
}

// dkimPassed reports whether some signature passed for domain, aligned
// per mode (RFC 7489 section 3.1.1).
func (v *Verdict) dkimPassed(domain string, mode dmarc.AlignmentMode) bool {
	for _, d := range v.DKIM {
		if d.Value == authres.ResultPass && aligned(d.Domain, domain, mode) {
			return true
		}
	}
	return false
}

// DKIMFailed reports whether some signature failed (a broken signature,
// not a missing one).
func (v *Verdict) DKIMFailed() bool {
	for _, d := range v.DKIM {
		if d.Value == authres.ResultFail || d.Value == authres.ResultPermError {
			return true
		}
	}
	return false
}

// errTemporary marks a check that could not conclude because the DNS
// failed temporarily; the message is then refused with a 451.
var errTemporary = errors.New("gateway: temporary DNS failure")

// maxDKIMSignatures bounds the signatures verified per message (each can
// cost a DNS lookup).
const maxDKIMSignatures = 5

// Check runs SPF, DKIM and DMARC on msg. Every lookup goes through r
// and is bounded by ctx. A temporary DNS failure is recorded as temperror
// in the verdict; Check returns an error only when ctx ends first.
func Check(ctx context.Context, r Resolver, env Envelope, msg []byte) (Verdict, error) {
	var v Verdict
	lookupTXT := func(name string) ([]string, error) { return r.LookupTXT(ctx, name) }

	// SPF, RFC 7208 section 2.4: the MAIL FROM identity, or the HELO
	// identity for the null reverse-path.
	sender := env.From
	if sender == "" {
		sender = "postmaster@" + env.Helo
	}
	v.SPFDomain = domainOf(sender)
	res, _ := spf.CheckHostWithSender(env.IP, env.Helo, sender, spf.WithResolver(r), spf.WithContext(ctx))
	v.SPF = res

	// DKIM, RFC 6376 section 6.
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: lookupTXT, MaxVerifications: maxDKIMSignatures,
	})
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		v.DKIM = append(v.DKIM, DKIMResult{Value: authres.ResultPermError, Reason: err.Error()})
	}
	for _, vr := range verifs {
		d := DKIMResult{Domain: strings.ToLower(vr.Domain), Value: authres.ResultPass}
		switch {
		case vr.Err == nil:
		case dkim.IsTempFail(vr.Err):
			d.Value, d.Reason = authres.ResultTempError, vr.Err.Error()
		case dkim.IsPermFail(vr.Err):
			d.Value, d.Reason = authres.ResultPermError, vr.Err.Error()
		default:
			d.Value, d.Reason = authres.ResultFail, vr.Err.Error()
		}
		v.DKIM = append(v.DKIM, d)
	}

	// DMARC, RFC 7489 section 6.6.
	v.FromDomain = headerFromDomain(msg)
	v.DMARC = authres.ResultNone
	if v.FromDomain != "" {
		rec, err := lookupDMARC(v.FromDomain, lookupTXT)
		switch {
		case err == nil:
			v.DMARCPolicy = rec.Policy
			spfOK := v.SPF == spf.Pass && env.From != "" && aligned(v.SPFDomain, v.FromDomain, rec.SPFAlignment)
			if spfOK || v.dkimPassed(v.FromDomain, rec.DKIMAlignment) {
				v.DMARC = authres.ResultPass
			} else {
				v.DMARC = authres.ResultFail
			}
		case dmarc.IsTempFail(err):
			v.DMARC = authres.ResultTempError
		case errors.Is(err, dmarc.ErrNoPolicy):
		default:
			v.DMARC = authres.ResultPermError
		}
	}
	if err := ctx.Err(); err != nil {
		return v, fmt.Errorf("gateway: checks: %w", err)
	}
	return v, nil
}

// lookupDMARC finds the policy for domain, falling back to its
// organizational domain (RFC 7489 section 6.6.3).
func lookupDMARC(domain string, lookupTXT func(string) ([]string, error)) (*dmarc.Record, error) {
	opts := &dmarc.LookupOptions{LookupTXT: lookupTXT}
	rec, err := dmarc.LookupWithOptions(domain, opts)
	if errors.Is(err, dmarc.ErrNoPolicy) {
		if org := orgDomain(domain); org != domain {
			rec, err = dmarc.LookupWithOptions(org, opts)
			if err == nil && rec.SubdomainPolicy != "" {
				rec.Policy = rec.SubdomainPolicy
			}
		}
	}
	return rec, err
}

// aligned reports identifier alignment (RFC 7489 section 3.1): the same
// domain in strict mode, the same organizational domain in relaxed mode
// (the default).
func aligned(a, b string, mode dmarc.AlignmentMode) bool {
	a, b = strings.ToLower(a), strings.ToLower(b)
	if mode == dmarc.AlignmentStrict {
		return a == b
	}
	return a != "" && orgDomain(a) == orgDomain(b)
}

// orgDomain is a domain's organizational domain: its registrable part,
// by the public suffix list.
func orgDomain(d string) string {
	d = strings.TrimSuffix(strings.ToLower(d), ".")
	if org, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return org
	}
	return d
}

func domainOf(addr string) string {
	return strings.ToLower(addr[strings.LastIndexByte(addr, '@')+1:])
}

// headerFromDomain is the domain of the message's single From address
// (RFC 7489 section 6.6.1); "" when there is none or more than one.
func headerFromDomain(msg []byte) string {
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		return ""
	}
	list, err := m.Header.AddressList("From")
	if err != nil || len(list) != 1 || !strings.Contains(list[0].Address, "@") {
		return ""
	}
	return domainOf(list[0].Address)
}

// Temporary reports whether the verdict could not conclude because of a
// temporary DNS failure, so the message should be refused with a 4xx and
// retried (RFC 7208 section 8.6, RFC 7489 section 6.6.3).
func (v *Verdict) Temporary() bool {
	if v.SPF == spf.TempError || v.DMARC == authres.ResultTempError {
		return true
	}
	for _, d := range v.DKIM {
		if d.Value == authres.ResultTempError {
			return true
		}
	}
	return false
}

// AuthenticationResults formats the verdict as the value of an
// Authentication-Results header (RFC 8601 section 2.2) for authservID,
// the gateway's host name.
func (v *Verdict) AuthenticationResults(authservID string, env Envelope) string {
	results := []authres.Result{&authres.SPFResult{
		Value: authres.ResultValue(v.SPF), From: v.SPFDomain,
	}}
	if env.From == "" {
		results[0] = &authres.SPFResult{Value: authres.ResultValue(v.SPF), Helo: env.Helo}
	}
	if len(v.DKIM) == 0 {
		results = append(results, &authres.DKIMResult{Value: authres.ResultNone})
	}
	for _, d := range v.DKIM {
		results = append(results, &authres.DKIMResult{Value: d.Value, Domain: d.Domain, Reason: reason(d.Reason)})
	}
	results = append(results, &authres.DMARCResult{Value: v.DMARC, From: v.FromDomain})
	return authres.Format(authservID, results)
}

// reason keeps a reason short and free of characters that would need
// quoting beyond what authres does.
func reason(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return ' '
		}
		return r
	}, s)
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}
