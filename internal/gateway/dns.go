package gateway

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Record is one DNS record to publish, in zone-file terms.
type Record struct {
	Name  string // fully qualified, with the trailing dot
	Type  string // "MX" or "TXT"
	Value string // for MX "PREFERENCE HOST.", for TXT the text unquoted
}

// String formats r as a zone-file line; a TXT value is quoted and split
// into strings of at most 255 bytes (RFC 1035 section 3.3.14), as a DKIM
// key of RSA-2048 needs.
func (r Record) String() string {
	v := r.Value
	if r.Type == "TXT" {
		var parts []string
		for len(v) > 255 {
			parts = append(parts, `"`+v[:255]+`"`)
			v = v[255:]
		}
		parts = append(parts, `"`+v+`"`)
		v = strings.Join(parts, " ")
		if len(parts) > 1 {
			v = "( " + v + " )"
		}
	}
	return fmt.Sprintf("%s\tIN\t%s\t%s", r.Name, r.Type, v)
}

// DNSConfig is what a domain's records say.
type DNSConfig struct {
	// Domain is the community's mail domain.
	Domain string
	// MX is the gateway's host name (Config.Hostname), the domain's mail
	// exchanger and the host the SPF record authorises to send.
	MX string
	// Selector and Key name and hold the DKIM key the Outbound signs with;
	// without a Key no DKIM record is made.
	Selector string
	Key      crypto.PublicKey
	// DMARCPolicy is "none", "quarantine" or "reject". Default
	// "quarantine": receivers file mail that fails both SPF and DKIM for
	// the domain as junk.
	DMARCPolicy string
	// DMARCReports, when set, is the mailto: URI for aggregate reports.
	DMARCReports string
}

// Records returns the records to publish for c.Domain, in a fixed order:
// MX (RFC 5321 section 5), SPF (RFC 7208: the MX hosts may send, nothing
// else), DKIM (RFC 6376 section 3.6.1, with the public key) and DMARC
// (RFC 7489 section 6.3, relaxed alignment).
func Records(c DNSConfig) ([]Record, error) {
	domain := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(c.Domain), "."))
	mx := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(c.MX), "."))
	if domain == "" || mx == "" {
		return nil, errors.New("gateway: records: domain and MX host are required")
	}
	out := []Record{
		{Name: domain + ".", Type: "MX", Value: "10 " + mx + "."},
		{Name: domain + ".", Type: "TXT", Value: "v=spf1 mx -all"},
	}
	if c.Key != nil {
		if c.Selector == "" {
			return nil, errors.New("gateway: records: a DKIM key needs a selector")
		}
		txt, err := DKIMRecord(c.Key)
		if err != nil {
			return nil, err
		}
		out = append(out, Record{Name: c.Selector + "._domainkey." + domain + ".", Type: "TXT", Value: txt})
	}
	policy := c.DMARCPolicy
	if policy == "" {
		policy = "quarantine"
	}
	switch policy {
	case "none", "quarantine", "reject":
	default:
		return nil, fmt.Errorf("gateway: records: DMARC policy %q: want none, quarantine or reject", policy)
	}
	dmarc := "v=DMARC1; p=" + policy + "; adkim=r; aspf=r"
	if c.DMARCReports != "" {
		dmarc += "; rua=" + c.DMARCReports
	}
	out = append(out, Record{Name: "_dmarc." + domain + ".", Type: "TXT", Value: dmarc})
	return out, nil
}

// DKIMRecord is the DKIM key record's text for pub (RFC 6376 section
// 3.6.1; Ed25519 per RFC 8463: the raw 32-byte key).
func DKIMRecord(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k), nil
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return "", fmt.Errorf("gateway: DKIM record: %w", err)
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	}
	return "", fmt.Errorf("gateway: DKIM record: unsupported key type %T (want Ed25519 or RSA)", pub)
}
