package gateway_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/epost-mail/epost/internal/gateway"
)

// FuzzInbound: whatever a message holds, the checks do not fail, the
// stamped message keeps the original body (of a message with CRLF line
// endings throughout), and no X-Epost-Junk survives
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
		if !bytes.HasPrefix(out, []byte(gateway.HeaderAuthResults+": "+ar)) {
			t.Fatalf("stamped message starts %q", out[:min(len(out), 80)])
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
