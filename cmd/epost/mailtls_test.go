package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/epost-mail/epost/internal/env"
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
		handshake(t, cfg, pool, name)
	}
}

// testCA issues certificates for the given names from a throwaway CA.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue writes a leaf certificate for name (and 127.0.0.1) and its key
// to certPath and keyPath, dated at, and returns the leaf's DER.
func (ca *testCA) issue(t *testing.T, serial int64, name, certPath, keyPath string, at time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})...)
	for path, b := range map[string][]byte{certPath: chain, keyPath: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, at, at); err != nil {
			t.Fatal(err)
		}
	}
	return der
}

// handshake connects a client trusting pool to a server with cfg and
// returns the certificate the server showed.
func handshake(t *testing.T, cfg *tls.Config, pool *x509.CertPool, name string) []byte {
	t.Helper()
	c, s := net.Pipe()
	// The pipes are closed, not the TLS connections: a close_notify
	// written into an unbuffered pipe nobody reads waits for its
	// deadline.
	defer c.Close()
	go func() {
		defer s.Close()
		_ = tls.Server(s, cfg).Handshake()
	}()
	cl := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: name})
	if err := cl.Handshake(); err != nil {
		t.Fatalf("a client trusting the certificate, connecting to %s: %v", name, err)
	}
	return cl.ConnectionState().PeerCertificates[0].Raw
}

// TestMailTLSGiven: mail_tls_cert and mail_tls_key replace the
// self-signed certificate, and a renewed pair is served without a
// restart, while a broken one leaves the last good pair in use.
func TestMailTLSGiven(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "mail.crt"), filepath.Join(dir, "mail.key")
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	first := ca.issue(t, 2, "mail.example.test", certPath, keyPath, t0)
	cfg, sum, err := givenMailTLS(certPath, keyPath, env.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(first); sum != hex.EncodeToString(want[:]) {
		t.Fatalf("fingerprint %s", sum)
	}
	if got := handshake(t, cfg, ca.pool, "mail.example.test"); !bytes.Equal(got, first) {
		t.Fatal("the server showed another certificate")
	}
	renewed := ca.issue(t, 3, "mail.example.test", certPath, keyPath, t0.Add(time.Minute))
	if got := handshake(t, cfg, ca.pool, "mail.example.test"); !bytes.Equal(got, renewed) {
		t.Fatal("the renewed certificate is not served")
	}
	if err := os.WriteFile(certPath, []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := handshake(t, cfg, ca.pool, "mail.example.test"); !bytes.Equal(got, renewed) {
		t.Fatal("a broken certificate file replaced the good pair")
	}
	if _, _, err := givenMailTLS(certPath, keyPath, env.Discard); err == nil {
		t.Fatal("a broken certificate file loaded at start")
	}
	if _, err := parseConfig([]byte("dir = \"d\"\nnode = \"n\"\nmail_tls_cert = \"" + certPath + "\"\n")); err == nil {
		t.Fatal("mail_tls_cert without mail_tls_key was accepted")
	}

	// A node with the keys in its config: IMAP's STARTTLS shows the
	// given certificate, which a client trusting only the CA accepts.
	ca.issue(t, 4, "mail.example.test", certPath, keyPath, t0.Add(2*time.Minute))
	com := newCommunity(t, []string{"n1"}, []string{"alice@example.org"}, "correct horse battery")
	nodeCfg := loopbackConfig(t, com, "n1", "", []string{"alice@example.org"},
		`mail_tls_cert = ""`, `mail_tls_cert = "`+certPath+`"`, `mail_tls_key = ""`, `mail_tls_key = "`+keyPath+`"`)
	var out, errOut syncBuffer
	exited := make(chan error, 1)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { exited <- runNode(ctx, []string{"--config", nodeCfg}, &out, &errOut) }()
	defer func() {
		cancel()
		if err := <-exited; err != nil {
			t.Errorf("node: %v\n%s", err, errOut.String())
		}
	}()
	awaitOutput(t, &out, readyRE, 60*time.Second, exited)
	if !strings.Contains(out.String(), "mail TLS certificate "+certPath+" (SHA-256 ") {
		t.Fatalf("the node does not name the given certificate:\n%s", out.String())
	}
	imapAddr := imapRE.FindStringSubmatch(out.String())[1]
	cl, err := imapclient.DialStartTLS(imapAddr, &imapclient.Options{TLSConfig: &tls.Config{RootCAs: ca.pool, ServerName: "mail.example.test"}})
	if err != nil {
		t.Fatalf("STARTTLS trusting the CA: %v", err)
	}
	defer cl.Close()
	if err := cl.Login("alice@example.org", "correct horse battery").Wait(); err != nil {
		t.Fatalf("login over TLS: %v", err)
	}
}
