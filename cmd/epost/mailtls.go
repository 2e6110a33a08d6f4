package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"

	"github.com/epost-mail/epost/internal/imapd"
)

// The node's certificate for IMAP and SMTP clients and its key, in the
// node's store directory.
const (
	mailCertFile = "mail-tls.crt"
	mailKeyFile  = "mail-tls.key"
)

// mailTLS returns the TLS configuration of a node's IMAP and SMTP servers:
// the self-signed certificate kept in storeDir/mail-tls.crt (its key in
// mail-tls.key), made on first use for localhost, this machine's name and
// the hosts the servers listen on (every address of this machine when
// they listen on all of them). It stays the same across restarts, so a
// mail client on another device can be given the certificate once to
// trust. It also returns the certificate's path and SHA-256 fingerprint.
func mailTLS(storeDir string, listen ...string) (*tls.Config, string, string, error) {
	certPath, keyPath := filepath.Join(storeDir, mailCertFile), filepath.Join(storeDir, mailKeyFile)
	if _, err := os.Stat(certPath); errors.Is(err, fs.ErrNotExist) {
		if err := newMailCert(storeDir, certPath, keyPath, listen); err != nil {
			return nil, "", "", fmt.Errorf("node: mail TLS certificate: %w", err)
		}
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, "", "", fmt.Errorf("node: mail TLS certificate: %w (delete %s to have a new one made)", err, certPath)
	}
	sum := sha256.Sum256(cert.Certificate[0])
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	return cfg, certPath, hex.EncodeToString(sum[:]), nil
}

// writeFileAtomic writes b to path through a temporary file.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// newMailCert writes a self-signed ECDSA P-256 certificate, valid ten
// years, and its key (mode 0600), PEM-encoded; the key first, so that a
// certificate on disk always has its key.
func newMailCert(dir, certPath, keyPath string, listen []string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	der, key, err := imapd.NewSelfSignedCert(mailCertHosts(listen)...)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// mailCertHosts lists the names and addresses the certificate is for.
func mailCertHosts(listen []string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	for _, l := range listen {
		host, _, err := net.SplitHostPort(l)
		if err != nil || host == "" {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			addrs, _ := net.InterfaceAddrs()
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
					hosts = append(hosts, n.IP.String())
				}
			}
			continue
		}
		hosts = append(hosts, host)
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}
