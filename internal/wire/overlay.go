package wire

import "github.com/epost-mail/epost/internal/id"

// Overlay message types (block 16-63). Append-only.
const (
	TypeRoute      Type = 16
	TypeRouteAck   Type = 17
	TypeJoinReply  Type = 18
	TypeProbe      Type = 19
	TypeProbeReply Type = 20
	TypeHeartbeat  Type = 21
	TypeRowRequest Type = 22
	TypeRowReply   Type = 23
	TypeDirect     Type = 24
	TypeProbeVia   Type = 25
	TypeViaReply   Type = 26
	TypeRelay      Type = 27
	TypeDelivered  Type = 28
)

// NodeHandle names an overlay node: its ring id and transport address.
type NodeHandle struct {
	_    struct{} `cbor:",toarray"`
	ID   id.NodeID
	Addr string
}

// RouteKind distinguishes what a routed message carries. Append-only.
type RouteKind uint8

// Route kinds.
const (
	RouteApp  RouteKind = 0 // an application payload, delivered at the key's root
	RouteJoin RouteKind = 1 // a join request: hops add their routing-table rows
)

// Route is a message travelling hop by hop to the root of Key.
type Route struct {
	_       struct{} `cbor:",toarray"`
	Hop     uint64   // per-hop id, acknowledged by the next hop
	Kind    RouteKind
	Key     id.ID
	Src     NodeHandle
	Sender  NodeHandle // the node forwarding it on this hop
	Hops    uint8
	Payload []byte
	Rows    []NodeHandle // join only: routing-table entries of the nodes on the path
	// Seq, when not zero, numbers an application message end to end: the
	// root confirms delivery to Src (Delivered), which re-sends it until
	// then, and the root delivers each (Src, Seq) once.
	Seq uint64
}

// Delivered confirms to a message's source that the root delivered it.
type Delivered struct {
	_    struct{} `cbor:",toarray"`
	From NodeHandle
	Seq  uint64
}

// RouteAck acknowledges one hop of a Route.
type RouteAck struct {
	_    struct{} `cbor:",toarray"`
	From NodeHandle
	Hop  uint64
}

// JoinReply is the root's answer to a joining node.
type JoinReply struct {
	_    struct{} `cbor:",toarray"`
	From NodeHandle
	Leaf []NodeHandle
	Rows []NodeHandle
}

// Probe flags.
const (
	ProbeWantReply uint8 = 1 << iota // answer with a ProbeReply
	ProbeWantLeaf                    // include your leaf set in the reply
	ProbeJoining                     // the sender is joining and not yet active
)

// Probe checks a node's liveness and measures the round trip; it may carry
// the sender's leaf set and the nodes the sender found dead (a leaf-set
// repair announcement).
type Probe struct {
	_     struct{} `cbor:",toarray"`
	From  NodeHandle
	Nonce uint64
	Sent  int64
	Flags uint8
	Leaf  []NodeHandle
	Dead  []id.NodeID
}

// ProbeReply answers a Probe, echoing its nonce and send time.
type ProbeReply struct {
	_     struct{} `cbor:",toarray"`
	From  NodeHandle
	Nonce uint64
	Sent  int64
	Leaf  []NodeHandle
}

// Heartbeat tells a node's left neighbour that it is alive, and carries
// the sender's leaf set so that knowledge of the ring keeps flowing and
// stray members get replaced.
type Heartbeat struct {
	_    struct{} `cbor:",toarray"`
	From NodeHandle
	Leaf []NodeHandle
}

// RowRequest asks for one row of the receiver's routing table.
type RowRequest struct {
	_    struct{} `cbor:",toarray"`
	From NodeHandle
	Row  uint8
}

// RowReply carries the requested routing-table row.
type RowReply struct {
	_       struct{} `cbor:",toarray"`
	From    NodeHandle
	Row     uint8
	Entries []NodeHandle
}

// Direct is an application payload sent straight to one node.
type Direct struct {
	_       struct{} `cbor:",toarray"`
	From    NodeHandle
	Payload []byte
}

// ProbeVia asks a node to probe Target on the sender's behalf: the
// sender's own probes went unanswered, and the link may be broken while
// the target is alive (a routing anomaly).
type ProbeVia struct {
	_      struct{} `cbor:",toarray"`
	From   NodeHandle
	Target NodeHandle
	Nonce  uint64
}

// ViaReply answers a ProbeVia: whether the helper reaches the target.
type ViaReply struct {
	_         struct{} `cbor:",toarray"`
	From      NodeHandle
	Target    id.NodeID
	Nonce     uint64
	Reachable bool
}

// Relay carries a message from From to To through a helper, for a pair of
// nodes whose direct link is broken. The sender leaves Via empty; the
// helper fills it in with itself and forwards. Payload is the complete
// encoded message, which the receiver handles as if it came from From.
type Relay struct {
	_       struct{} `cbor:",toarray"`
	From    NodeHandle
	To      NodeHandle
	Via     NodeHandle
	Payload []byte
}
