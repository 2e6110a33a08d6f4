package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/wire"
)

// Batching: a writer drains up to this many queued messages, or this many
// bytes, into one flush. The overlay sends many small messages (acks,
// heartbeats, hops), and one flush is one yamux frame and often one TCP
// segment for all of them.
const (
	maxBatch      = 64
	maxBatchBytes = 256 << 10
	bufferSize    = 32 << 10
)

// handleStream serves one inbound stream: a hello, then frames until the
// stream ends. libp2p runs it on its own goroutine.
func (t *Transport) handleStream(s network.Stream) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = s.Reset()
		return
	}
	t.wg.Add(1)
	t.mu.Unlock()
	defer t.wg.Done()

	remote, key := remoteOf(s)
	r := bufio.NewReaderSize(s, bufferSize)
	_ = s.SetReadDeadline(time.Now().Add(t.tune.HelloTimeout))
	b, err := readFrame(r, maxHello)
	if err != nil && !errors.Is(err, errBadFrame) && !errors.Is(err, errEmptyFrame) && !isTimeout(err) {
		// The stream ended before a hello (the peer went away): nothing to
		// hold against it.
		_ = s.Reset()
		return
	}
	var from env.Addr
	var node id.NodeID
	if err != nil {
		err = fmt.Errorf("read hello: %w", err)
	} else {
		from, node, err = checkHello(t.verifier.Load(), remote, key, b)
	}
	if err != nil {
		// A peer that cannot show a valid certificate for its own key has
		// no business on this connection at all.
		t.stats.refused.Add(1)
		t.log.Warn("refused peer", "peer", remote.String(), "remote", s.Conn().RemoteMultiaddr().String(), "err", err)
		_ = s.Reset()
		_ = s.Conn().Close()
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	// Tell the opener its hello passed: only then does it count what it
	// wrote behind the hello as sent (and fail it if no answer comes).
	_ = s.SetWriteDeadline(time.Now().Add(t.tune.HelloTimeout))
	if _, err := s.Write([]byte{helloAccepted}); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.SetWriteDeadline(time.Time{})
	var cert, rev []byte
	if h, err := decodeHello(b); err == nil {
		cert, rev = h.Cert, h.Revocation
	}
	t.authMu.Lock()
	t.auth[peerPart(from)] = authEntry{addr: from, node: node, cert: cert}
	t.authMu.Unlock()
	if len(rev) > 0 {
		t.adopt(rev)
	}

	for {
		msg, err := readFrame(r, wire.MaxMessage)
		switch {
		case err == nil:
		case errors.Is(err, errEmptyFrame):
			t.stats.malformed.Add(1)
			continue
		case err == io.EOF:
			_ = s.Close()
			return
		case errors.Is(err, errBadFrame):
			t.stats.malformed.Add(1)
			t.log.Debug("dropped stream with a bad frame", "from", string(from), "err", err)
			_ = s.Reset()
			return
		default:
			// The stream or its connection failed: nothing to count here,
			// the sender sees it.
			_ = s.Reset()
			return
		}
		if t.cfg.Faults.drop(from) {
			// Read and discarded, so the sender's stream keeps flowing
			// as it would into a link that loses everything.
			t.stats.blocked.Add(1)
			continue
		}
		t.stats.msgsReceived.Add(1)
		t.stats.bytesReceived.Add(uint64(len(msg)))
		select {
		case t.inflight <- struct{}{}:
		case <-t.ctx.Done():
			_ = s.Reset()
			return
		}
		t.cfg.Post(func() {
			t.cfg.Deliver(from, msg)
			<-t.inflight
		})
	}
}

// adopt takes a revocation list a peer passed on, if it is newer.
func (t *Transport) adopt(list []byte) {
	adopted, err := t.verifier.Load().Adopt(list)
	if err != nil {
		t.log.Warn("refused a revocation list from a peer", "err", err)
		return
	}
	if !adopted {
		return
	}
	t.RevocationChanged()
	if cb := t.cfg.OnRevocation; cb != nil {
		t.cfg.Post(func() { cb(list) })
	}
}

// isTimeout reports whether err is a deadline passing (yamux and QUIC
// streams report it as a net.Error with Timeout, not os.ErrDeadlineExceeded).
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// outPeer is one destination's queue and writer goroutine, which owns the
// outbound stream.
type outPeer struct {
	t     *Transport
	addr  env.Addr
	pid   peer.ID
	maddr ma.Multiaddr
	queue chan frame

	// Owned by the writer goroutine: the current stream, if any.
	s      network.Stream
	cw     *countingWriter
	w      *bufio.Writer
	events chan error // from the stream's watcher: the hello's answer, then the stream's end
	acked  bool       // the peer accepted our hello on s
	// Messages flushed to s before the peer accepted the hello: counted as
	// sent once it does, failed if it refuses.
	pending      []func(error) // their failure callbacks (reliable ones)
	pendingMsgs  uint64
	pendingBytes uint64
}

// countingWriter counts the bytes the stream accepted, so a failed flush
// can tell "nothing left" (safe to retry) from "something may have
// arrived" (a retry could duplicate).
type countingWriter struct {
	w io.Writer
	n int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += n
	return n, err
}

func (p *outPeer) run() {
	t := p.t
	defer t.wg.Done()
	idle := time.NewTimer(t.tune.IdleTimeout)
	defer idle.Stop()
	batch := make([]frame, 0, maxBatch)
	for {
		select {
		case f := <-p.queue:
			batch = p.drain(append(batch[:0], f))
			p.send(batch)
			clear(batch) // let the messages be collected
			// A destination that cannot be reached keeps no goroutine: the
			// next message to it starts a new writer.
			if p.s == nil && p.retire() {
				return
			}
			idle.Reset(t.tune.IdleTimeout)
		case err := <-p.events: // nil channel (never ready) while there is no stream
			p.onStreamEvent(err)
			if p.s == nil && p.retire() {
				return
			}
		case <-idle.C:
			if !p.retire() {
				idle.Reset(t.tune.IdleTimeout)
				continue
			}
			p.dropStream(nil, true)
			return
		case <-t.ctx.Done():
			p.dropStream(ErrClosed, false)
			p.failQueued(ErrClosed)
			return
		}
	}
}

// retire removes the writer from the transport's table if nothing is
// queued, and reports whether it did; the writer must then exit. Under
// t.mu no Send can be between finding p and queueing to it.
func (p *outPeer) retire() bool {
	t := p.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(p.queue) > 0 {
		return false
	}
	if t.peers[p.addr] == p {
		delete(t.peers, p.addr)
	}
	return true
}

// drain adds queued messages to batch without waiting.
func (p *outPeer) drain(batch []frame) []frame {
	size := len(batch[0].msg)
	for len(batch) < maxBatch && size < maxBatchBytes {
		select {
		case f := <-p.queue:
			batch = append(batch, f)
			size += len(f.msg)
		default:
			return batch
		}
	}
	return batch
}

// failQueued fails everything waiting in the queue.
func (p *outPeer) failQueued(err error) {
	for {
		select {
		case f := <-p.queue:
			p.t.fail(f, err)
		default:
			return
		}
	}
}

// send writes batch to the peer, opening a stream if needed.
func (p *outPeer) send(batch []frame) {
	t := p.t
	for attempt := 0; ; attempt++ {
		fresh := false
		if p.s == nil {
			if err := p.open(); err != nil {
				t.stats.dialFailures.Add(1)
				t.log.Debug("open stream failed", "to", string(p.addr), "err", err)
				err = fmt.Errorf("transport: open stream to %s: %w", p.addr, err)
				for _, f := range batch {
					t.fail(f, err)
				}
				// What queued behind would fail the same way; failing it now
				// spares one dial attempt per message.
				p.failQueued(err)
				return
			}
			fresh = true
		}
		err := p.write(batch)
		if err == nil {
			var n uint64
			for _, f := range batch {
				n += uint64(len(f.msg))
			}
			if p.acked {
				t.stats.msgsSent.Add(uint64(len(batch)))
				t.stats.bytesSent.Add(n)
				return
			}
			p.pendingMsgs += uint64(len(batch))
			p.pendingBytes += n
			for _, f := range batch {
				if f.failed != nil {
					p.pending = append(p.pending, f.failed)
				}
			}
			return
		}
		t.stats.writeFailures.Add(1)
		accepted, acked := p.cw.n, p.acked
		err = fmt.Errorf("transport: write to %s: %w", p.addr, err)
		p.dropStream(err, false)
		if !fresh && acked && attempt == 0 && accepted == 0 && t.ctx.Err() == nil {
			// The stream died before this batch (the peer restarted or
			// trimmed the connection while it sat idle) and took no byte of
			// it: one retry on a new stream cannot duplicate anything.
			continue
		}
		t.log.Debug("write failed", "to", string(p.addr), "err", err)
		for _, f := range batch {
			t.fail(f, err)
		}
		return
	}
}

// open dials the peer if needed, opens a stream, queues the hello and
// starts the stream's watcher.
func (p *outPeer) open() error {
	t := p.t
	// Re-added on every open: the entry may have expired, and the address
	// a message names is the freshest we know.
	t.host.Peerstore().AddAddr(p.pid, p.maddr, peerstore.AddressTTL)
	ctx, cancel := context.WithTimeout(t.ctx, t.tune.DialTimeout)
	defer cancel()
	// libp2p backs off dialling an address that failed (5 s, doubling, up
	// to minutes). A node that crashed and came back at the same address
	// would stay unreachable that long, and its join would stall: nobody
	// could answer it. The overlay decides itself when to give up on a
	// peer, so each new stream gets a real dial.
	if sw, ok := t.host.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(p.pid)
	}
	// A peer behind NAT is reached through a relay, on a connection
	// libp2p marks limited; our relays raise the limits for members.
	s, err := t.host.NewStream(network.WithAllowLimitedConn(ctx, "epost"), p.pid, ProtocolID)
	if err != nil {
		return err
	}
	t.stats.streamsOpened.Add(1)
	p.s = s
	p.cw = &countingWriter{w: s}
	p.w = bufio.NewWriterSize(p.cw, bufferSize)
	p.acked = false
	// Buffered, so it leaves with the first batch in one flush: waiting for
	// the peer's answer first would add a round trip to every first
	// contact, which the overlay's per-hop timeouts would feel.
	if err := writeFrame(p.w, *t.hello.Load()); err != nil {
		p.dropStream(nil, false)
		return fmt.Errorf("queue hello: %w", err)
	}
	p.events = make(chan error, 2) // the watcher sends at most twice and never blocks
	t.wg.Add(1)
	go p.watch(s, p.events)
	return nil
}

// watch reports, on events, the peer's answer to our hello (nil if it
// accepted), then the end of the stream: the acceptor never writes more,
// so any return from Read means the stream is gone. This lets the writer
// fail what it wrote into a refused stream, and drop a dead stream before
// writing into it.
func (p *outPeer) watch(s network.Stream, events chan<- error) {
	defer p.t.wg.Done()
	_ = s.SetReadDeadline(time.Now().Add(p.t.tune.HelloTimeout))
	var b [1]byte
	_, err := io.ReadFull(s, b[:])
	if err == nil && b[0] != helloAccepted {
		err = fmt.Errorf("answer %#x", b[0])
	}
	if err != nil {
		events <- fmt.Errorf("%w: %v", errRefusedByPeer, err)
		return
	}
	events <- nil
	_ = s.SetReadDeadline(time.Time{})
	if _, err := s.Read(b[:]); err == nil {
		err = errors.New("unexpected data from the acceptor")
	}
	events <- fmt.Errorf("stream ended: %w", err)
}

// onStreamEvent handles what the current stream's watcher reported.
func (p *outPeer) onStreamEvent(err error) {
	t := p.t
	switch {
	case err == nil: // the hello was accepted
		p.acked = true
		t.stats.msgsSent.Add(p.pendingMsgs)
		t.stats.bytesSent.Add(p.pendingBytes)
		p.pending, p.pendingMsgs, p.pendingBytes = nil, 0, 0
	case !p.acked: // refused
		t.stats.dialFailures.Add(1)
		t.log.Debug("peer refused our hello", "to", string(p.addr), "err", err)
		err = fmt.Errorf("transport: open stream to %s: %w", p.addr, err)
		p.dropStream(err, false)
		// As after a failed dial: spare the queue one refusal each.
		p.failQueued(err)
		// No answer usually means a connection to a process that is gone
		// (the peer crashed and came back with the same key): libp2p
		// would open the next stream on it too, until its keepalive
		// notices, tens of seconds later. Close it so the next stream
		// dials the peer afresh.
		_ = t.host.Network().ClosePeer(p.pid)
	default: // the stream ended after it was accepted
		p.dropStream(nil, false)
	}
}

// write frames batch onto the stream and flushes it.
func (p *outPeer) write(batch []frame) error {
	_ = p.s.SetWriteDeadline(time.Now().Add(p.t.tune.WriteTimeout))
	p.cw.n = 0
	for _, f := range batch {
		if f.msg == nil {
			continue // an announcement: the hello alone (see keepReservation)
		}
		if err := writeFrame(p.w, f.msg); err != nil {
			return err
		}
	}
	return p.w.Flush()
}

// dropStream discards the current stream: closed politely when idle,
// reset otherwise. Messages written but not yet accepted by the peer are
// failed with err, or just counted as dropped if err is nil.
func (p *outPeer) dropStream(err error, graceful bool) {
	if p.s != nil {
		if graceful {
			_ = p.s.Close()
		} else {
			_ = p.s.Reset()
		}
	}
	if p.pendingMsgs > 0 {
		if err == nil {
			err = fmt.Errorf("transport: stream to %s ended before the peer accepted it", p.addr)
		}
		p.t.stats.dropped.Add(p.pendingMsgs - uint64(len(p.pending)))
		for _, cb := range p.pending {
			p.t.fail(frame{failed: cb}, err)
		}
	}
	p.s, p.cw, p.w, p.events, p.acked = nil, nil, nil, nil, false
	p.pending, p.pendingMsgs, p.pendingBytes = nil, 0, 0
}
