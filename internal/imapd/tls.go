package imapd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// SelfSigned makes a TLS configuration with a fresh self-signed
// certificate (ECDSA P-256, valid ten years) for hosts (names or IP
// addresses): a node's default when no certificate is configured
// (DESIGN.md section 7). Mail clients on loopback are told to trust it
// once; persisting it, so that it stays the same across restarts, is the
// node's job.
func SelfSigned(hosts ...string) (*tls.Config, error) {
	der, key, err := NewSelfSignedCert(hosts...)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
	}, nil
}

// NewSelfSignedCert makes a self-signed ECDSA P-256 certificate for
// hosts (names or IP addresses), valid ten years, and returns it in DER
// with its key. It is marked as its own issuer, able to sign: clients
// given the certificate as a trust anchor (Python's ssl, OpenSSL) want that.
func NewSelfSignedCert(hosts ...string) (der []byte, key *ecdsa.PrivateKey, err error) {
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("imapd: tls key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("imapd: tls serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "epost node", Organization: []string{"epost"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("imapd: tls certificate: %w", err)
	}
	return der, key, nil
}

// ServeTLS accepts implicit-TLS connections (port 993 style, RFC 8314)
// on ln with Config.TLS until Close.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.cfg.TLS == nil {
		return errors.New("imapd: ServeTLS without Config.TLS")
	}
	// Guarded beneath TLS (the limits count connections), watched above
	// it (the watch reads commands).
	return s.serve(s.imapTLS, watchListener{tls.NewListener(s.guard(ln), s.cfg.TLS), s})
}
