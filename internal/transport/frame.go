package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/wire"
)

// helloVersion is the version of the hello this build writes and reads.
const helloVersion = 1

// helloAccepted is the one byte an acceptor writes back once a stream's
// hello passed its checks; it never writes anything else.
const helloAccepted = 0x01

// errRefusedByPeer: the peer closed the stream instead of accepting our
// hello (it does not accept our certificate, or is shutting down).
var errRefusedByPeer = errors.New("hello not accepted by peer")

// maxHello bounds the hello frame: a certificate is a few hundred bytes.
const maxHello = 16 << 10

// readChunk is the largest frame buffer allocated before its bytes
// arrive; larger frames grow as they are read, so a peer that announces
// 64 MiB and stalls pins no more than this.
const readChunk = 64 << 10

// errBadFrame marks input that breaks the framing: an oversized or
// overlong length, or a stream that ends inside a frame. errEmptyFrame is
// a zero-length frame, which carries nothing but does not break framing.
// Errors that wrap neither come from the stream itself (reset, closed).
var (
	errBadFrame   = errors.New("bad frame")
	errEmptyFrame = errors.New("empty frame")
)

// hello is the first frame on every stream: who the sender is (its
// certificate) and where it is reached (its canonical address).
type hello struct {
	_       struct{} `cbor:",toarray"`
	Version uint16
	Cert    []byte
	Addr    string
	// Revocation is the newest revocation list the sender holds (empty at
	// epoch 0): every connection passes it on, so a new epoch reaches the
	// whole community as nodes talk.
	Revocation []byte
}

func encodeHello(cert *identity.NodeCert, self env.Addr, revocation []byte) ([]byte, error) {
	b, err := wire.Marshal(hello{Version: helloVersion, Cert: cert.Bytes(), Addr: string(self), Revocation: revocation})
	if err != nil {
		return nil, fmt.Errorf("transport: encode hello: %w", err)
	}
	return b, nil
}

// decodeHello parses a hello without judging it.
func decodeHello(b []byte) (hello, error) {
	var h hello
	if err := wire.Unmarshal(b, &h); err != nil {
		return hello{}, fmt.Errorf("hello: %w", err)
	}
	if h.Version != helloVersion {
		return hello{}, fmt.Errorf("hello: version %d, want %d: %w", h.Version, helloVersion, wire.ErrVersion)
	}
	return h, nil
}

// checkHello judges a hello received from remote (the peer ID the secure
// channel authenticated, with its public key): the certificate must verify,
// certify remote's key, and the claimed address must be canonical and end
// in remote's peer ID. It returns the address to attribute frames to and
// the certified NodeID.
func checkHello(v *identity.Verifier, remote peer.ID, remoteKey crypto.PubKey, b []byte) (env.Addr, id.NodeID, error) {
	h, err := decodeHello(b)
	if err != nil {
		return "", id.NodeID{}, err
	}
	cert, err := v.VerifyNode(h.Cert)
	if err != nil {
		return "", id.NodeID{}, fmt.Errorf("hello certificate: %w", err)
	}
	certKey, err := crypto.UnmarshalEd25519PublicKey(cert.Key.Bytes())
	if err != nil {
		return "", id.NodeID{}, fmt.Errorf("hello certificate key: %w", err)
	}
	certPeer, err := peer.IDFromPublicKey(certKey)
	if err != nil {
		return "", id.NodeID{}, fmt.Errorf("hello certificate key: %w", err)
	}
	// The peer ID of an Ed25519 key embeds the key itself, so equal IDs
	// mean equal keys; the secure channel proved the remote holds it.
	if certPeer != remote || (remoteKey != nil && !remoteKey.Equals(certKey)) {
		return "", id.NodeID{}, fmt.Errorf("hello certificate is for %s, connection is from %s: %w", certPeer, remote, identity.ErrKeyMismatch)
	}
	pid, _, err := parseAddr(env.Addr(h.Addr))
	if err != nil {
		return "", id.NodeID{}, fmt.Errorf("hello address: %w", err)
	}
	if pid != remote {
		return "", id.NodeID{}, fmt.Errorf("hello address %q names another peer than %s: %w", h.Addr, remote, ErrBadAddr)
	}
	return env.Addr(h.Addr), cert.NodeID, nil
}

// writeFrame writes one length-prefixed frame.
func writeFrame(w *bufio.Writer, msg []byte) error {
	var n [binary.MaxVarintLen64]byte
	if _, err := w.Write(n[:binary.PutUvarint(n[:], uint64(len(msg)))]); err != nil {
		return err
	}
	_, err := w.Write(msg)
	return err
}

// readFrame reads one length-prefixed frame of at most max bytes. It
// returns io.EOF only for a clean end between frames. After errEmptyFrame
// the reader is at the next frame; after any other error the stream is
// unusable (a bad length cannot be skipped reliably).
func readFrame(r *bufio.Reader, max int) ([]byte, error) {
	n, err := readUvarint(r)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, errEmptyFrame
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("%w: length %d > %d bytes", errBadFrame, n, max)
	}
	if n <= readChunk {
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, truncated(err)
		}
		return b, nil
	}
	var buf bytes.Buffer
	buf.Grow(readChunk)
	if _, err := io.CopyN(&buf, r, int64(n)); err != nil {
		return nil, truncated(err)
	}
	return buf.Bytes(), nil
}

// readUvarint reads a frame length. Unlike binary.ReadUvarint it tells a
// length that overflows (errBadFrame) from the stream's own errors.
func readUvarint(r io.ByteReader) (uint64, error) {
	var x uint64
	var s uint
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := r.ReadByte()
		if err != nil {
			if i > 0 {
				return 0, truncated(err)
			}
			return 0, err // io.EOF here is a clean end between frames
		}
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				break
			}
			return x | uint64(b)<<s, nil
		}
		x |= uint64(b&0x7f) << s
		s += 7
	}
	return 0, fmt.Errorf("%w: length overflows 64 bits", errBadFrame)
}

// truncated classifies an error met inside a frame: the stream ending
// there is a framing error; anything else is the stream's own.
func truncated(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: stream ends inside a frame", errBadFrame)
	}
	return err
}

// remoteOf returns the authenticated peer of a stream and its key.
func remoteOf(s network.Stream) (peer.ID, crypto.PubKey) {
	c := s.Conn()
	return c.RemotePeer(), c.RemotePublicKey()
}
