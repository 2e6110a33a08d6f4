package gateway_test

import (
	"context"
	"net"
	"net/smtp"
	"testing"

	"github.com/emersion/go-msgauth/authres"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/gateway"
	"github.com/epost-mail/epost/internal/smtpd"
)

type onePassword struct{}

func (onePassword) Check(u, p string) (string, bool) { return u, u == "alice@example.org" && p == "pw" }

// TestSubmissionThroughTheGateway: a member's client submits mail for the
// Internet to its node's submission server (smtpd), whose Outbound is
// the gateway's; the message reaches the remote exchanger DKIM-signed, by
// direct MX delivery and through a smarthost (smtpd.Smarthost as the next
// hop).
func TestSubmissionThroughTheGateway(t *testing.T) {
	dns := newFakeDNS()
	k := newDKIMKey(t, dns, "example.org")
	r := startRemoteMX(t)
	direct, _, _ := directMX(t, r)
	keys := []gateway.DKIMKey{{Domain: "example.org", Selector: "s1", Signer: k.priv}}
	for _, c := range []struct {
		name string
		next gateway.Relayer
	}{
		{"direct MX", direct},
		{"smarthost", &smtpd.Smarthost{Addr: r.addr, Hostname: "mx.example.org"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := &gateway.Outbound{Domains: []string{"example.org"}, Keys: keys, Next: c.next}
			srv := smtpd.New(smtpd.Config{Auth: onePassword{}, Domains: []string{"example.org"}, Outbound: out, Log: env.Discard})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(ln)
			defer srv.Close()
			auth := smtp.PlainAuth("", "alice@example.org", "pw", "127.0.0.1")
			if err := smtp.SendMail(ln.Addr().String(), auth, "alice@example.org", []string{"dave@remote.example"}, []byte(outMsg)); err != nil {
				t.Fatal(err)
			}
			got := recv(t, r.got, "delivery")
			v, err := gateway.Check(context.Background(), dns, gateway.Envelope{IP: goodIP, Helo: "mx.example.org", From: got.from}, got.msg)
			if err != nil {
				t.Fatal(err)
			}
			if len(v.DKIM) != 1 || v.DKIM[0].Value != authres.ResultPass {
				t.Errorf("DKIM at the receiver: %+v", v.DKIM)
			}
			// Unauthenticated relaying is refused by the submission server.
			if err := smtp.SendMail(ln.Addr().String(), nil, "alice@example.org", []string{"dave@remote.example"}, []byte(outMsg)); code(err) != "530" {
				t.Errorf("unauthenticated: %v, want 530", err)
			}
		})
	}
}
