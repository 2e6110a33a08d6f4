package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/gateway"
)

func TestGatewayDNS(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "dkim.pem")
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCmd(t, cmdGateway, "dns", "--domain", "example.org", "--mx", "mx.example.org", "--dkim-key", key)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"MX", "mx.example.org", "v=spf1", "epost._domainkey.example.org", "k=ed25519", "_dmarc.example.org", "v=DMARC1"} {
		if !strings.Contains(out, want) {
			t.Errorf("records lack %q:\n%s", want, out)
		}
	}
	if _, _, err := runCmd(t, cmdGateway, "dns", "--domain", "example.org"); err == nil {
		t.Fatal("gateway dns without --mx succeeded")
	}
}

// TestGatewayJunkConfig: [gateway] junk_filter, junk_filter_timeout and
// junk_threshold make the MX's junk policy and a filter that runs the
// program; bad values are refused before the node starts.
func TestGatewayJunkConfig(t *testing.T) {
	dir := t.TempDir()
	filter := filepath.Join(dir, "filter.sh")
	// The message on standard input, the score on standard output.
	if err := os.WriteFile(filter, []byte("#!/bin/sh\nif grep -q lottery; then echo 4.5; else echo 0; fi\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	base := "dir = \"d\"\nnode = \"n1\"\n[gateway]\nuser = \"gw@example.org\"\nhostname = \"mx.example.org\"\n"
	for _, line := range []string{
		"junk_filter = \"/bin/sh " + filter + "\"",
		"junk_filter = [\"/bin/sh\", \"" + filter + "\"]",
	} {
		cfg, err := parseConfig([]byte(base + line + "\njunk_threshold = 4\njunk_filter_timeout = \"5s\"\n"))
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		policy, f := cfg.Gateway.junk()
		if policy.Threshold != 4 || policy.SPFFail != gateway.DefaultJunkPolicy().SPFFail {
			t.Errorf("%s: policy %+v", line, policy)
		}
		cf, ok := f.(*gateway.CommandFilter)
		if !ok || cf.Timeout != 5*time.Second {
			t.Fatalf("%s: filter %#v", line, f)
		}
		if s, err := f.Score([]byte("Subject: you won the lottery\r\n\r\nclaim it\r\n")); err != nil || s != 4.5 {
			t.Errorf("%s: a lottery message scores %v, %v", line, s, err)
		}
		if s, err := f.Score([]byte("Subject: lunch\r\n\r\nat noon?\r\n")); err != nil || s != 0 {
			t.Errorf("%s: a plain message scores %v, %v", line, s, err)
		}
	}
	// Nothing set: the default policy, no filter.
	cfg, err := parseConfig([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if policy, f := cfg.Gateway.junk(); policy != gateway.DefaultJunkPolicy() || f != nil {
		t.Errorf("defaults: %+v %v", policy, f)
	}
	for _, bad := range []string{
		"junk_threshold = 0", "junk_threshold = -2", "junk_threshold = nan",
		"junk_filter_timeout = \"soon\"", "junk_filter_timeout = \"-1s\"",
		"junk_filter = \"/nonexistent/filter\"", "junk_filter = [1, 2]",
	} {
		if _, err := parseConfig([]byte(base + bad + "\n")); err == nil {
			t.Errorf("%s was accepted", bad)
		}
	}
}
