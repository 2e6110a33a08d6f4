package gateway_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/epost-mail/epost/internal/gateway"
)

// fakeDNS is the tests' DNS: nothing reaches the real one. Names not in
// it do not exist; names in temp fail temporarily.
type fakeDNS struct {
	mu   sync.Mutex
	txt  map[string][]string
	ip   map[string][]net.IP
	mx   map[string][]*net.MX
	temp map[string]bool
}

func newFakeDNS() *fakeDNS {
	return &fakeDNS{txt: map[string][]string{}, ip: map[string][]net.IP{}, mx: map[string][]*net.MX{}, temp: map[string]bool{}}
}

var _ gateway.Resolver = (*fakeDNS)(nil)

func (f *fakeDNS) fail(name string) error {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if f.temp[name] {
		return &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func key(name string) string { return strings.TrimSuffix(strings.ToLower(name), ".") }

func (f *fakeDNS) setTXT(name string, v ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.txt[key(name)] = v
}

func (f *fakeDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, ok := f.txt[key(name)]; ok && !f.temp[key(name)] {
		return v, nil
	}
	return nil, f.fail(name)
}

func (f *fakeDNS) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, ok := f.mx[key(name)]; ok {
		return v, nil
	}
	return nil, f.fail(name)
}

func (f *fakeDNS) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []net.IPAddr
	for _, ip := range f.ip[key(host)] {
		out = append(out, net.IPAddr{IP: ip})
	}
	if out == nil {
		return nil, f.fail(host)
	}
	return out, nil
}

func (f *fakeDNS) LookupAddr(_ context.Context, addr string) ([]string, error) {
	return nil, f.fail(addr)
}

// dkimKey is a signing key published under selector "s1" of domain.
type dkimKey struct {
	domain string
	priv   crypto.Signer
}

func newDKIMKey(t testing.TB, dns *fakeDNS, domain string) dkimKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	txt, err := gateway.DKIMRecord(pub)
	if err != nil {
		t.Fatal(err)
	}
	dns.setTXT("s1._domainkey."+domain, txt)
	return dkimKey{domain: domain, priv: priv}
}

func (k dkimKey) sign(t testing.TB, msg string) string {
	t.Helper()
	var b strings.Builder
	err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{
		Domain: k.domain, Selector: "s1", Signer: k.priv,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
