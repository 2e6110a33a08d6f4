package wire

import "github.com/epost-mail/epost/internal/id"

// Glacier message types (block 96-127). Append-only.
const (
	TypeGlacierStore     Type = 96  // a fragment for a holder: routed to its offset key, or handed clockwise
	TypeGlacierStored    Type = 97  // a holder's word that a fragment is durable, to whoever placed it
	TypeGlacierFetch     Type = 98  // asks for the fragments of one bundle a node holds
	TypeGlacierFragments Type = 99  // the answer to a fetch
	TypeGlacierHolding   Type = 100 // audit: a holder tells a bundle's coordinator what it holds
	TypeGlacierRenew     Type = 101 // an owner renews the lease of a bundle's fragments
	TypeGlacierAudit     Type = 102 // audit: a holder's summary for the coordinators of a run of bundle keys
	TypeGlacierRelease   Type = 103 // an owner frees the fragments of bundles a compacted bundle supersedes
)

// GlacierRecord is one fragment as a holder stores and serves it: the
// encoded fragment with its owner's address and user certificate, so
// that anyone who receives it can check the manifest's signature.
type GlacierRecord struct {
	_        struct{} `cbor:",toarray"`
	Fragment []byte
	Address  string
	Cert     []byte
}

// GlacierStore asks a node to hold one fragment. Cap is the most
// fragments of one bundle a node may hold (1: every fragment on a
// distinct node); a node that holds that many already hands the fragment
// to its clockwise neighbour, counting Skips.
type GlacierStore struct {
	_      struct{} `cbor:",toarray"`
	Req    uint64
	Origin NodeHandle // who placed it, for the acknowledgement
	Record GlacierRecord
	Cap    uint16
	Skips  uint8
	Lease  int64 // ticks
}

// GlacierStored acknowledges a fragment made durable.
type GlacierStored struct {
	_        struct{} `cbor:",toarray"`
	Req      uint64
	Manifest [32]byte
	Index    uint16
	Holder   NodeHandle
}

// GlacierFetch asks for the fragments of Bundle a node holds. Routed to
// the offset key of fragment Index, it walks clockwise up to Skips more
// nodes when the node reached does not hold that fragment; sent directly
// (Skips 0) it asks one holder.
type GlacierFetch struct {
	_      struct{} `cbor:",toarray"`
	Req    uint64
	Origin NodeHandle
	Bundle id.ID
	Index  uint16
	Skips  uint8
}

// GlacierFragments answers a fetch with the records the sender holds.
// Last is set by the node where the walk for fragment Index ends (it holds
// that fragment, or may walk no further): its answer, records or none,
// is final for that index, so a fetch learns quickly that a bundle is not
// there.
type GlacierFragments struct {
	_       struct{} `cbor:",toarray"`
	Req     uint64
	From    NodeHandle
	Records []GlacierRecord
	Index   uint16
	Last    bool
}

// GlacierRenew asks the holders of a bundle's fragments to keep them for
// Lease more ticks. Routed to fragment Index's key, it walks clockwise up
// to Skips more nodes, as a fetch does.
type GlacierRenew struct {
	_      struct{} `cbor:",toarray"`
	Bundle id.ID
	Owner  id.ID
	Index  uint16
	Lease  int64
	Skips  uint8
}

// GlacierHolding tells the coordinator of a bundle (the root of its key)
// which of its fragments the sender holds. Coordinators count these to
// find bundles that lost fragments.
type GlacierHolding struct {
	_        struct{} `cbor:",toarray"`
	Bundle   id.ID
	Manifest [32]byte
	N        uint16
	Indices  []uint16
	Holder   NodeHandle
}

// GlacierAuditEntry is what a holder holds of one bundle.
type GlacierAuditEntry struct {
	_        struct{} `cbor:",toarray"`
	Bundle   id.ID
	Manifest [32]byte
	N        uint16
	Indices  []uint16
}

// GlacierAudit carries a holder's entries for a run of bundle keys,
// sorted by key. Routed to the first key, its root takes the entries it
// is the coordinator of and routes the rest on to the next key, so a
// holder sends one message per run of nearby keys, not one per bundle.
// Hops bounds the walk.
type GlacierAudit struct {
	_       struct{} `cbor:",toarray"`
	Holder  NodeHandle
	Entries []GlacierAuditEntry
	Hops    uint8
}

// GlacierRelease asks the holders of bundle Seq of Owner to free its
// fragments: Manifest is the owner's signed manifest of a later bundle
// that supersedes Seq (it holds the same objects), checked against the
// owner's certificate Cert for Address. Routed to fragment
// Index's key, it walks clockwise up to Skips more nodes, as a renewal
// does.
type GlacierRelease struct {
	_        struct{} `cbor:",toarray"`
	Owner    id.ID
	Seq      uint64
	Index    uint16
	Skips    uint8
	Manifest []byte
	Address  string
	Cert     []byte
}
