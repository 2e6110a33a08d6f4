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
