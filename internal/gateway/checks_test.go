package gateway_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dmarc"

	"github.com/epost-mail/epost/internal/gateway"
)

const plainMsg = "From: Carol <carol@sender.example>\r\nTo: alice@example.org\r\nSubject: hello\r\n" +
	"Message-ID: <1@sender.example>\r\n\r\nHello Alice.\r\n"

var (
	goodIP = net.ParseIP("192.0.2.10")
	badIP  = net.ParseIP("198.51.100.66")
)

// senderDNS publishes sender.example: SPF allowing goodIP only, a DKIM
// key, and DMARC with policy p.
func senderDNS(t *testing.T, p string) (*fakeDNS, dkimKey) {
	dns := newFakeDNS()
	dns.setTXT("sender.example", "v=spf1 ip4:192.0.2.10 -all")
	if p != "" {
		dns.setTXT("_dmarc.sender.example", "v=DMARC1; p="+p)
	}
	return dns, newDKIMKey(t, dns, "sender.example")
}

func check(t *testing.T, dns *fakeDNS, ip net.IP, from, msg string) gateway.Verdict {
	t.Helper()
	v, err := gateway.Check(context.Background(), dns, gateway.Envelope{IP: ip, Helo: "mx.sender.example", From: from}, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSPF(t *testing.T) {
	dns, _ := senderDNS(t, "")
	dns.setTXT("soft.example", "v=spf1 ip4:192.0.2.10 ~all")
	for _, c := range []struct {
		ip   net.IP
		from string
		want spf.Result
	}{
		{goodIP, "carol@sender.example", spf.Pass},
		{badIP, "carol@sender.example", spf.Fail},
		{badIP, "dave@soft.example", spf.SoftFail},
		{goodIP, "erin@nospf.example", spf.None},
	} {
		v := check(t, dns, c.ip, c.from, plainMsg)
		if v.SPF != c.want {
			t.Errorf("SPF for %s from %s: %s, want %s", c.from, c.ip, v.SPF, c.want)
		}
		if v.SPFDomain != c.from[strings.IndexByte(c.from, '@')+1:] {
			t.Errorf("SPF domain %q for %s", v.SPFDomain, c.from)
		}
	}
}

func TestSPFTemporaryFailureIsTemporary(t *testing.T) {
	dns, _ := senderDNS(t, "")
	dns.temp["sender.example"] = true
	v := check(t, dns, goodIP, "carol@sender.example", plainMsg)
	if v.SPF != spf.TempError || !v.Temporary() {
		t.Fatalf("SPF %s, temporary %v; want temperror, true", v.SPF, v.Temporary())
	}
}

func TestDKIM(t *testing.T) {
	dns, k := senderDNS(t, "")
	signed := k.sign(t, plainMsg)

	v := check(t, dns, goodIP, "carol@sender.example", signed)
	if len(v.DKIM) != 1 || v.DKIM[0].Value != authres.ResultPass || v.DKIM[0].Domain != "sender.example" {
		t.Fatalf("signed message: DKIM %+v, want one pass for sender.example", v.DKIM)
	}

	tampered := strings.Replace(signed, "Hello Alice.", "Send me your password.", 1)
	v = check(t, dns, goodIP, "carol@sender.example", tampered)
	if len(v.DKIM) != 1 || v.DKIM[0].Value != authres.ResultFail || !v.DKIMFailed() {
		t.Fatalf("tampered message: DKIM %+v, want one fail", v.DKIM)
	}

	// A key that is not published: the signature cannot be checked.
	other := newDKIMKey(t, newFakeDNS(), "sender.example")
	v = check(t, dns, goodIP, "carol@sender.example", other.sign(t, plainMsg))
	if len(v.DKIM) != 1 || v.DKIM[0].Value == authres.ResultPass {
		t.Fatalf("wrong key: DKIM %+v, want no pass", v.DKIM)
	}

	v = check(t, dns, goodIP, "carol@sender.example", plainMsg)
	if len(v.DKIM) != 0 || v.DKIMFailed() {
		t.Fatalf("unsigned message: DKIM %+v, want none", v.DKIM)
	}
}

func TestDMARC(t *testing.T) {
	dns, k := senderDNS(t, "reject")
	signed := k.sign(t, plainMsg)
	tampered := strings.Replace(signed, "Hello Alice.", "Wire the money.", 1)
	for _, c := range []struct {
		name string
		ip   net.IP
		from string
		msg  string
		want authres.ResultValue
	}{
		{"SPF aligned", goodIP, "carol@sender.example", plainMsg, authres.ResultPass},
		{"DKIM aligned", badIP, "bounces@list.example", signed, authres.ResultPass},
		{"SPF of another domain, no DKIM", goodIP, "x@elsewhere.example", plainMsg, authres.ResultFail},
		{"both fail", badIP, "carol@sender.example", tampered, authres.ResultFail},
	} {
		v := check(t, dns, c.ip, c.from, c.msg)
		if v.DMARC != c.want || v.FromDomain != "sender.example" || v.DMARCPolicy != dmarc.PolicyReject {
			t.Errorf("%s: DMARC %s (policy %q, From domain %q), want %s", c.name, v.DMARC, v.DMARCPolicy, v.FromDomain, c.want)
		}
	}

	// A subdomain without a record of its own falls back to its
	// organizational domain's (RFC 7489 section 6.6.3).
	sub := strings.Replace(plainMsg, "carol@sender.example", "carol@news.sender.example", 1)
	if v := check(t, dns, badIP, "carol@news.sender.example", sub); v.DMARC != authres.ResultFail {
		t.Errorf("subdomain: DMARC %s, want fail", v.DMARC)
	}
	// No policy anywhere: none.
	if v := check(t, newFakeDNS(), badIP, "carol@sender.example", plainMsg); v.DMARC != authres.ResultNone {
		t.Errorf("no policy: DMARC %s, want none", v.DMARC)
	}
}

func TestAuthenticationResultsHeader(t *testing.T) {
	dns, k := senderDNS(t, "none")
	env := gateway.Envelope{IP: goodIP, Helo: "mx.sender.example", From: "carol@sender.example"}
	v, err := gateway.Check(context.Background(), dns, env, []byte(k.sign(t, plainMsg)))
	if err != nil {
		t.Fatal(err)
	}
	got := v.AuthenticationResults("mx.example.org", env)
	id, results, err := authres.Parse(got)
	if err != nil {
		t.Fatalf("%q does not parse: %v", got, err)
	}
	if id != "mx.example.org" || len(results) != 3 {
		t.Fatalf("%q: authserv-id %q, %d results", got, id, len(results))
	}
	want := "mx.example.org; spf=pass smtp.mailfrom=sender.example; dkim=pass header.d=sender.example; dmarc=pass header.from=sender.example"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestJunkScore(t *testing.T) {
	p := gateway.DefaultJunkPolicy()
	dns, k := senderDNS(t, "none")
	tampered := strings.Replace(k.sign(t, plainMsg), "Hello Alice.", "You won!", 1)
	for _, c := range []struct {
		name string
		ip   net.IP
		msg  string
		dmrc string
		junk bool
	}{
		{"all pass", goodIP, k.sign(t, plainMsg), "none", false},
		{"SPF fail only", badIP, plainMsg, "", false},
		{"DKIM fail only", goodIP, tampered, "", false},
		{"SPF and DKIM fail", badIP, tampered, "", true},
		{"DMARC fail under reject", badIP, plainMsg, "reject", true},
	} {
		if c.dmrc != "" {
			dns.setTXT("_dmarc.sender.example", "v=DMARC1; p="+c.dmrc)
		} else {
			dns.setTXT("_dmarc.sender.example")
		}
		v := check(t, dns, c.ip, "carol@sender.example", c.msg)
		if got := p.Score(&v) >= p.Threshold; got != c.junk {
			t.Errorf("%s: score %.1f (verdict %+v): junk %v, want %v", c.name, p.Score(&v), v, got, c.junk)
		}
	}
}

func TestRecords(t *testing.T) {
	dns := newFakeDNS()
	k := newDKIMKey(t, dns, "example.org")
	recs, err := gateway.Records(gateway.DNSConfig{Domain: "Example.org.", MX: "mx.example.org", Selector: "s1", Key: k.priv.Public()})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, r := range recs {
		lines = append(lines, r.String())
	}
	got := strings.Join(lines, "\n")
	for _, want := range []string{
		"example.org.\tIN\tMX\t10 mx.example.org.",
		"example.org.\tIN\tTXT\t\"v=spf1 mx -all\"",
		"s1._domainkey.example.org.\tIN\tTXT\t\"v=DKIM1; k=ed25519; p=",
		"_dmarc.example.org.\tIN\tTXT\t\"v=DMARC1; p=quarantine; adkim=r; aspf=r\"",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("records lack %q:\n%s", want, got)
		}
	}
	// The published DKIM record is the one that verifies the key's
	// signatures: publish what Records says, and check a signed message.
	dns.setTXT("s1._domainkey.example.org", recs[2].Value)
	msg := strings.ReplaceAll(plainMsg, "sender.example", "example.org")
	signed := dkimKey{domain: "example.org", priv: k.priv}.sign(t, msg)
	v := check(t, dns, goodIP, "carol@example.org", signed)
	if len(v.DKIM) != 1 || v.DKIM[0].Value != authres.ResultPass {
		t.Errorf("a message signed with the published key: DKIM %+v", v.DKIM)
	}
	if _, err := gateway.Records(gateway.DNSConfig{Domain: "example.org", MX: "mx.example.org", DMARCPolicy: "maybe"}); err == nil {
		t.Error("a bad DMARC policy was accepted")
	}
}
