package transport

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/identity"
)

// FuzzReadFrame: any byte stream splits into frames, empty frames, a
// framing error or a clean end; never a panic, never a frame above max.
func FuzzReadFrame(f *testing.F) {
	f.Add(frames([]byte("a"), nil, []byte("bcd")))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{0x80})
	f.Add([]byte{0x05, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		const max = 1 << 10
		r := bufio.NewReader(bytes.NewReader(b))
		for {
			msg, err := readFrame(r, max)
			switch {
			case err == nil:
				if len(msg) == 0 || len(msg) > max {
					t.Fatalf("frame of %d bytes", len(msg))
				}
				continue
			case errors.Is(err, errEmptyFrame):
				continue
			case err == io.EOF, errors.Is(err, errBadFrame):
				return
			default:
				t.Fatalf("unexpected error class: %v", err)
			}
		}
	})
}

// FuzzCheckHello: no hello, however malformed, panics or is accepted
// unless it carries a valid certificate for the connection's key and an
// address naming the connection's peer.
func FuzzCheckHello(f *testing.F) {
	r := &seq{}
	ca := newCA(f, r)
	v := identity.NewVerifier(ca.Public())
	m := newMember(f, ca, r)
	priv, err := crypto.UnmarshalEd25519PrivateKey(m.key.Ed25519())
	if err != nil {
		f.Fatal(err)
	}
	pid, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		f.Fatal(err)
	}
	addr := env.Addr("/ip4/127.0.0.1/tcp/4001/p2p/" + pid.String())
	good := helloFor(f, m.cert, addr)
	f.Add(good)
	f.Add(helloFor(f, m.cert, "/ip4/127.0.0.1/tcp/4001"))
	f.Add([]byte{0x83, 0x01, 0x40, 0x60})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, node, err := checkHello(v, pid, priv.GetPublic(), b)
		if err != nil {
			return
		}
		if node != m.cert.NodeID || peerPart(got) != pid.String() {
			t.Fatalf("accepted %q as %v", got, node)
		}
	})
}

// FuzzParseAddr: an address a peer announces parses only if it is
// canonical, and then splits into a transport part and a peer ID that
// put back together give the address again; peerPart, which the hello
// check compares with the connection's peer, names the same peer.
func FuzzParseAddr(f *testing.F) {
	const pid = "12D3KooWGzh5h9fGzsoTAfJRbTeNPt1jTSQD5hNTfJwgKZvZv3Rk"
	for _, a := range []string{
		"/ip4/127.0.0.1/tcp/4001/p2p/" + pid, "/ip6/::1/udp/4001/quic-v1/p2p/" + pid,
		"/dns4/node.example.org/tcp/4001/p2p/" + pid, "/ip4/1.2.3.4/tcp/1/p2p/" + pid + "/p2p-circuit/p2p/" + pid,
		"/ip4/127.0.0.1/tcp/4001", "/p2p/" + pid, "/ip4/127.0.0.1/tcp/04001/p2p/" + pid,
	} {
		f.Add(a)
	}
	f.Fuzz(func(t *testing.T, a string) {
		p, tpt, err := parseAddr(env.Addr(a))
		if err != nil {
			if !errors.Is(err, ErrBadAddr) {
				t.Fatalf("error %v is not ErrBadAddr", err)
			}
			return
		}
		if got := tpt.String() + "/p2p/" + p.String(); got != a {
			t.Fatalf("%q splits into %q", a, got)
		}
		if peerPart(env.Addr(a)) != p.String() {
			t.Fatalf("%q: peerPart %q, peer %s", a, peerPart(env.Addr(a)), p)
		}
	})
}
