package node

import (
	"testing"

	"github.com/epost-mail/epost/internal/wire"
	"github.com/epost-mail/epost/internal/wire/wiretest"
)

// FuzzChainState: the archive chain position a node reads back from its
// store at start-up decodes or is ignored (the node then asks the
// network), and what decodes round-trips.
func FuzzChainState(f *testing.F) {
	f.Add(wire.MustMarshal(chainState{Seq: 7, Prev: [32]byte{1, 2}}))
	f.Add(wire.MustMarshal(chainState{}))
	f.Fuzz(func(t *testing.T, b []byte) { wiretest.RoundTrip[chainState](t, b) })
}
