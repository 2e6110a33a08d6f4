// Package transport is the real env.Transport: epost's overlay messages
// carried over go-libp2p (TCP and QUIC, Noise, yamux), between nodes whose
// libp2p identity is their certified Ed25519 node key (DESIGN.md sections
// 2, 3 and 8).
//
// Wire protocol. One libp2p protocol, ProtocolID, carries a sequence of
// frames on a long-lived stream per destination: each frame is its length
// as an unsigned varint followed by that many bytes, at most
// wire.MaxMessage. The stream's opener writes; the acceptor reads, so
// each direction between two nodes has its own stream, opened by the
// sender. The first frame on every stream is a hello: the sender's node
// certificate and its canonical address. The acceptor answers a hello it
// accepts with the single byte 0x01 and then never writes again; it
// refuses one by resetting the stream and closing the connection. The
// opener does not wait for the answer (a round trip on every first
// contact would eat into the overlay's per-hop timeouts): it writes
// messages right behind the hello, counts them as sent only once the
// answer comes, and fails them (SendReliable) or counts them dropped
// (Send) if the stream is refused. A watcher goroutine per outbound stream
// reads the answer and then notices the stream's end, so a dead stream is
// dropped before the next write.
//
// Addresses. An env.Addr here is a full multiaddr ending in /p2p/<peer ID>,
// in its canonical string form, e.g.
// "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...". A node's own address (Addr)
// is its first listen address as bound (or Config.Advertise) with its peer
// ID appended.
//
// Invariants:
//   - A frame is handed to Deliver only after its stream's hello passed
//     every check: the certificate verifies against the community CA and
//     is not revoked; the key it certifies is the remote peer's key as
//     authenticated by the Noise handshake (so the peer proved it holds
//     the certified key); and the address it claims is canonical and ends
//     in that same peer ID. Otherwise the stream is refused, counted, and
//     its connection closed.
//   - Every frame from a stream is attributed to the address its hello
//     claimed, so for an honest peer the overlay's check "claimed sender
//     address == transport address" holds, and Authenticate confirms the
//     NodeID its certificate binds.
//   - Deliver and SendReliable's failure callbacks run only through
//     Config.Post, that is on the node's event loop; nothing here calls
//     into the protocol core from a transport goroutine.
//   - Send and SendReliable never block the caller: they queue the message
//     for the destination's writer goroutine, or drop it (counted) when the
//     queue is full. Messages to one destination leave in the order sent.
//   - Malformed input (a bad hello, an empty, oversized or truncated frame)
//     is dropped and counted; nothing a peer sends can panic the process.
//   - A message counts as sent (Stats.MsgsSent) only once it was flushed to
//     a stream whose hello the peer accepted.
//   - Close stops every goroutine the transport started before returning.
//   - Config.Faults (tests and fault drills only) discards traffic to and
//     from the peers it blocks, in both directions; a blocked reliable send
//     fails through Post like any other.
//
// Unlike the protocol cores, this package starts goroutines: a writer and
// a stream watcher per destination while it has an open stream or queued
// messages, and a reader per inbound stream (started by libp2p). It keeps
// its own counters (Stats); libp2p's own Prometheus metrics are turned
// off, so many hosts can share a process.
package transport
