package wire

// PAST message types (block 64-95). Append-only.
const (
	TypePastStore   Type = 64 // insert or renew: routed to the key's root, then sent on to each replica
	TypePastReceipt Type = 65 // a replica's signed storage receipt, to the inserter
	TypePastRefuse  Type = 66 // a replica's refusal, with the reason, to the inserter
	TypePastLookup  Type = 67 // routed to the key's root; answered by the first holder
	TypePastFetch   Type = 68 // asks one node directly for an object
	TypePastObject  Type = 69 // answer to a lookup or fetch
	TypePastOffer   Type = 70 // replica maintenance: the keys a holder offers a replica
	TypePastWant    Type = 71 // replica maintenance: the offered keys the replica lacks
	TypePastPush    Type = 72 // replica maintenance: one object with its remaining lease
	TypePastWatch   Type = 73 // asks a set's replicas to push new members to a node
	TypePastNotify  Type = 74 // a new set member, pushed to a watcher
)

// PastStore asks the root of Key, and then each replica, to store an
// object (or, with Renew, to extend the lease of one it has).
type PastStore struct {
	_      struct{} `cbor:",toarray"`
	Req    uint64
	Origin NodeHandle // the inserter, to which receipts go
	Kind   uint8
	Key    [32]byte
	Data   []byte // empty for a renewal
	Lease  int64  // ticks the object is to be kept from now
	Renew  bool
	Fanout bool // set on the routed copy: the root sends it on to the replica set
}

// PastReceipt is a replica's statement, signed by its node key, that it
// holds Key (at Version, for a mutable object) durably.
type PastReceipt struct {
	_        struct{} `cbor:",toarray"`
	Req      uint64
	Kind     uint8
	Key      [32]byte
	Version  uint64
	Renew    bool
	Node     NodeHandle
	Cert     []byte // the replica's node certificate
	Sig      []byte
	Replicas []NodeHandle // the root's view of the replica set (root only)
}

// PastReceiptBody is what a receipt's signature covers.
type PastReceiptBody struct {
	_       struct{} `cbor:",toarray"`
	Kind    uint8
	Key     [32]byte
	Version uint64
	Renew   bool
	Node    [16]byte
}

// PastRefuse is a replica's refusal to store, with the reason.
type PastRefuse struct {
	_      struct{} `cbor:",toarray"`
	Req    uint64
	Key    [32]byte
	Node   NodeHandle
	Reason string
}

// PastLookup asks for an object; Fetch asks one node, Lookup is routed.
type PastLookup struct {
	_      struct{} `cbor:",toarray"`
	Req    uint64
	Origin NodeHandle
	Kind   uint8
	Key    [32]byte
}

// PastObject answers a lookup or fetch. Replicas is the answering node's
// view of the nodes that should hold the key, for fall-back.
type PastObject struct {
	_        struct{} `cbor:",toarray"`
	Req      uint64
	Kind     uint8
	Key      [32]byte
	Found    bool
	Data     []byte
	Node     NodeHandle
	Replicas []NodeHandle
}

// PastOfferEntry names one object a holder has: its version (mutable
// objects) and the lease it has left.
type PastOfferEntry struct {
	_         struct{} `cbor:",toarray"`
	Kind      uint8
	Key       [32]byte
	Version   uint64
	Remaining int64
}

// PastOffer lists objects the sender holds and believes the receiver
// should hold too.
type PastOffer struct {
	_       struct{} `cbor:",toarray"`
	From    NodeHandle
	Round   uint64
	Entries []PastOfferEntry
}

// PastWant answers an offer with the entries the receiver lacks (or holds
// at a lower version); every other offered entry it holds.
type PastWant struct {
	_     struct{} `cbor:",toarray"`
	From  NodeHandle
	Round uint64
	Want  []PastOfferEntry
}

// PastPush carries one object to a replica that lacks it, with the lease
// it has left at the sender (a new holder never grants a fresh lease).
type PastPush struct {
	_         struct{} `cbor:",toarray"`
	From      NodeHandle
	Kind      uint8
	Key       [32]byte
	Data      []byte
	Remaining int64
}

// PastWatch asks the replicas of the set at Key to push new members to
// Watcher for TTL ticks. Routed to the key's root, which sends it on.
type PastWatch struct {
	_       struct{} `cbor:",toarray"`
	Key     [32]byte
	Watcher NodeHandle
	TTL     int64
	Fanout  bool
}

// PastNotify pushes one new member of a watched set.
type PastNotify struct {
	_      struct{} `cbor:",toarray"`
	Key    [32]byte
	Member []byte
}
