package main

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestMailTLSKept checks the node's mail certificate: made once, kept
// across restarts, its key private, and trusted by a client that was given
// the certificate file, for the address the servers listen on.
func TestMailTLSKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store", "n1")
	cfg, path, sum, err := mailTLS(dir, "127.0.0.2:1143", "")
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dir, mailCertFile) {
		t.Fatalf("certificate at %s", path)
	}
	if fi, err := os.Stat(filepath.Join(dir, mailKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	_, _, again, err := mailTLS(dir, "127.0.0.2:1143", "")
	if err != nil || again != sum {
		t.Fatalf("second start: fingerprint %s, was %s (%v)", again, sum, err)
	}

	pemBytes, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("the certificate file holds no certificate")
	}
	for _, name := range []string{"127.0.0.2", "localhost"} {
		c, s := net.Pipe()
		go func() {
			srv := tls.Server(s, cfg)
			_ = srv.Handshake()
			srv.Close()
		}()
		cl := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: name})
		if err := cl.Handshake(); err != nil {
			t.Errorf("a client trusting %s, connecting to %s: %v", mailCertFile, name, err)
		}
		cl.Close()
	}
}
