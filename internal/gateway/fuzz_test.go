package gateway_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"

	"github.com/epost-mail/epost/internal/gateway"
)

// FuzzInbound: whatever a message holds, the checks do not fail, the
// stamped message keeps the original body (of a message with CRLF line
// endings throughout), the gateway's Authentication-Results ends where
// the gateway wrote it, and no X-Epost-Junk survives
// in the header but the gateway's own (POST files gateway mail by it).
func FuzzInbound(f *testing.F) {
	f.Add([]byte(inMsg))
	f.Add([]byte("X-Epost-Junk: yes\r\n\tfolded\r\nFrom: a@b\r\n\r\nX-Epost-Junk: body\r\n"))
	f.Add([]byte("Authentication-Results: mx.example.org; spf=pass\nFrom: <>\n\n"))
	f.Add([]byte("DKIM-Signature: v=1; a=ed25519-sha256; d=sender.example; s=s1; h=from; bh=; b=\r\n\r\n"))
	f.Add([]byte("no header\r\n"))
	dns := newFakeDNS()
	dns.setTXT("sender.example", "v=spf1 ip4:192.0.2.10 -all")
	dns.setTXT("_dmarc.sender.example", "v=DMARC1; p=reject")
	newDKIMKey(f, dns, "sender.example")
	f.Fuzz(func(t *testing.T, msg []byte) {
		env := gateway.Envelope{IP: goodIP, Helo: "mx.sender.example", From: "carol@sender.example"}
		v, err := gateway.Check(context.Background(), dns, env, msg)
		if err != nil {
			t.Fatal(err)
		}
		ar := v.AuthenticationResults("mx.example.org", env)
		out := gateway.Stamp(msg, "mx.example.org", [][2]string{{gateway.HeaderAuthResults, ar}})
		ours := []byte(gateway.HeaderAuthResults + ": " + ar)
		if !bytes.HasPrefix(out, ours) {
			t.Fatalf("stamped message starts %q", out[:min(len(out), 80)])
		}
		next := bytes.TrimPrefix(bytes.TrimPrefix(out[len(ours):], []byte("\r")), []byte("\n"))
		if len(next) > 0 && (next[0] == ' ' || next[0] == '\t') {
			t.Fatalf("the message's first line continues the gateway's own result: %q", out[:min(len(out), 160)])
		}
		crlf := !bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n"))
		if i := bytes.Index(msg, []byte("\r\n\r\n")); crlf && i >= 0 && !bytes.HasSuffix(out, msg[i:]) {
			t.Fatalf("body changed")
		}
		// The header ends at the first blank line (LF or CRLF).
		for _, line := range strings.Split(string(out), "\n") {
			if strings.TrimRight(line, "\r") == "" {
				break
			}
			if strings.HasPrefix(strings.ToLower(line), "x-epost-junk:") {
				t.Fatalf("a forged junk verdict survived in %q", out)
			}
		}
	})
}

// FuzzOutbound: a user's message leaves through the gateway only from a
// community domain, unchanged behind the DKIM signature prepended to it,
// and the signature verifies (for a message with CRLF line endings and a
// header, which is what submission hands over).
func FuzzOutbound(f *testing.F) {
	f.Add("alice@example.org", []byte(outMsg))
	f.Add("Alice@Example.ORG", []byte("Subject: x\n\nbare LF\n"))
	f.Add("spammer@elsewhere.example", []byte(outMsg))
	f.Add("alice@example.org", []byte("no header at all"))
	dns := newFakeDNS()
	k := newDKIMKey(f, dns, "example.org")
	keys := []gateway.DKIMKey{{Domain: "example.org", Selector: "s1", Signer: k.priv}}
	f.Fuzz(func(t *testing.T, from string, msg []byte) {
		hop := &nextHop{}
		o := &gateway.Outbound{Domains: []string{"example.org"}, Keys: keys, Next: hop}
		if o.Relay(from, []string{"dave@remote.example"}, msg) != nil {
			return
		}
		if len(hop.got) != 1 || !strings.HasSuffix(hop.got[0].from, "@example.org") {
			t.Fatalf("relayed %+v for %q", hop.got, from)
		}
		signed := hop.got[0].msg
		if !bytes.HasPrefix(signed, []byte("DKIM-Signature:")) || !bytes.HasSuffix(signed, msg) {
			t.Fatalf("signing changed the message: %q", signed)
		}
		crlf := !bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n"))
		if !crlf || !bytes.Contains(msg, []byte("\r\n\r\n")) {
			return
		}
		v, err := gateway.Check(context.Background(), dns, gateway.Envelope{IP: goodIP, Helo: "mx.example.org", From: hop.got[0].from}, signed)
		if err != nil || len(v.DKIM) == 0 || v.DKIM[0].Value != authres.ResultPass {
			t.Fatalf("the signature does not verify: %+v, %v", v.DKIM, err)
		}
	})
}
