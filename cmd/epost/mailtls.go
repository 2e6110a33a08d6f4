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
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

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

// givenMailTLS returns the TLS configuration of a node whose config names
// its mail certificate (mail_tls_cert, a PEM chain, leaf first) and key
// (mail_tls_key): one from a CA that clients already trust, say. The
// files are read again when they change (a renewed certificate), checked
// at each handshake, so a renewal needs no restart; a pair that fails to
// load then keeps the previous one in use. It also returns the
// certificate's SHA-256 fingerprint.
func givenMailTLS(certPath, keyPath string, log *slog.Logger) (*tls.Config, string, error) {
	r := &certReloader{certPath: certPath, keyPath: keyPath, log: log}
	cert, err := r.load()
	if err != nil {
		return nil, "", fmt.Errorf("node: mail_tls_cert and mail_tls_key: %w", err)
	}
	sum := sha256.Sum256(cert.Certificate[0])
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.get}
	return cfg, hex.EncodeToString(sum[:]), nil
}

// certReloader serves a certificate pair from files, reloading it when
// either file's modification time or size changes.
type certReloader struct {
	certPath, keyPath string
	log               *slog.Logger

	mu    sync.Mutex
	cert  *tls.Certificate
	stamp [2]fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// load reads the pair if it changed since the last load.
func (r *certReloader) load() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cs, err := stampOf(r.certPath)
	if err != nil {
		return r.cert, err
	}
	ks, err := stampOf(r.keyPath)
	if err != nil {
		return r.cert, err
	}
	if r.cert != nil && r.stamp == [2]fileStamp{cs, ks} {
		return r.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(r.certPath, r.keyPath)
	if err != nil {
		return r.cert, err
	}
	r.cert, r.stamp = &cert, [2]fileStamp{cs, ks}
	return r.cert, nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, err := r.load()
	if err != nil && r.log != nil {
		// Half-written during a renewal, most likely: the old pair serves.
		r.log.Warn("mail TLS certificate not reloaded", "cert", r.certPath, "err", err)
	}
	if cert == nil {
		return nil, err
	}
	return cert, nil
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
