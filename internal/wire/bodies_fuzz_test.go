package wire_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/wire"
	"github.com/epost-mail/epost/internal/wire/wiretest"
)

// bodies maps every message type to the round-trip check of its body.
var bodies = map[wire.Type]func(testing.TB, []byte){
	wire.TypePing: check[wire.Ping], wire.TypePong: check[wire.Pong],
	wire.TypeRoute: check[wire.Route], wire.TypeRouteAck: check[wire.RouteAck], wire.TypeJoinReply: check[wire.JoinReply],
	wire.TypeProbe: check[wire.Probe], wire.TypeProbeReply: check[wire.ProbeReply], wire.TypeHeartbeat: check[wire.Heartbeat],
	wire.TypeRowRequest: check[wire.RowRequest], wire.TypeRowReply: check[wire.RowReply], wire.TypeDirect: check[wire.Direct],
	wire.TypeProbeVia: check[wire.ProbeVia], wire.TypeViaReply: check[wire.ViaReply], wire.TypeRelay: check[wire.Relay],
	wire.TypeDelivered: check[wire.Delivered],
	wire.TypePastStore: check[wire.PastStore], wire.TypePastReceipt: check[wire.PastReceipt], wire.TypePastRefuse: check[wire.PastRefuse],
	wire.TypePastLookup: check[wire.PastLookup], wire.TypePastFetch: check[wire.PastLookup], wire.TypePastObject: check[wire.PastObject],
	wire.TypePastOffer: check[wire.PastOffer], wire.TypePastWant: check[wire.PastWant], wire.TypePastPush: check[wire.PastPush],
	wire.TypePastWatch: check[wire.PastWatch], wire.TypePastNotify: check[wire.PastNotify],
	wire.TypeGlacierStore: check[wire.GlacierStore], wire.TypeGlacierStored: check[wire.GlacierStored],
	wire.TypeGlacierFetch: check[wire.GlacierFetch], wire.TypeGlacierFragments: check[wire.GlacierFragments],
	wire.TypeGlacierHolding: check[wire.GlacierHolding], wire.TypeGlacierRenew: check[wire.GlacierRenew],
	wire.TypeGlacierAudit: check[wire.GlacierAudit], wire.TypeGlacierRelease: check[wire.GlacierRelease],
	// Not messages, but signed or stored in these encodings: fuzzed
	// under unassigned type numbers.
	60000: check[wire.PastReceiptBody], 60001: check[wire.GlacierRecord],
}

func check[T any](t testing.TB, b []byte) { wiretest.RoundTrip[T](t, b) }

// FuzzMessageBodies: every message body, decoded by its type, re-encodes
// to a fixed point. Handlers are fuzzed in their packages; this checks
// the codec of each body type on its own, where the fuzzer reaches every
// field without getting past a handler's checks first.
//
// The first input picks the type: an index into the types, so that the
// fuzzer does not spend its time on unassigned numbers.
func FuzzMessageBodies(f *testing.F) {
	types := slices.Sorted(maps.Keys(bodies))
	h := wire.NodeHandle{ID: id.NodeID{ID: id.FromUint64(7, 7)}, Addr: "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooW"}
	k := [32]byte{1, 2, 3}
	rec := wire.GlacierRecord{Fragment: []byte("fragment"), Address: "alice@example.org", Cert: []byte("cert")}
	for t, v := range map[wire.Type]any{
		wire.TypePing:             wire.Ping{Nonce: 1, Sent: 2},
		wire.TypeRoute:            wire.Route{Hop: 1, Kind: wire.RouteJoin, Key: id.FromUint64(3, 3), Src: h, Sender: h, Hops: 2, Payload: []byte("x"), Rows: []wire.NodeHandle{h}, Seq: 9},
		wire.TypeJoinReply:        wire.JoinReply{From: h, Leaf: []wire.NodeHandle{h, h}, Rows: []wire.NodeHandle{h}},
		wire.TypeProbe:            wire.Probe{From: h, Nonce: 1, Sent: -1, Flags: wire.ProbeWantLeaf, Leaf: []wire.NodeHandle{h}, Dead: []id.NodeID{h.ID}},
		wire.TypeViaReply:         wire.ViaReply{From: h, Target: h.ID, Nonce: 4, Reachable: true},
		wire.TypeRelay:            wire.Relay{From: h, To: h, Payload: []byte{0x83, 1, 1, 0x40}},
		wire.TypePastStore:        wire.PastStore{Req: 1, Origin: h, Kind: 1, Key: k, Data: []byte("data"), Lease: 3600, Fanout: true},
		wire.TypePastReceipt:      wire.PastReceipt{Req: 1, Kind: 2, Key: k, Version: 3, Node: h, Cert: []byte("c"), Sig: make([]byte, 64), Replicas: []wire.NodeHandle{h}},
		wire.TypePastRefuse:       wire.PastRefuse{Req: 1, Key: k, Node: h, Reason: "full"},
		wire.TypePastObject:       wire.PastObject{Req: 1, Kind: 1, Key: k, Found: true, Data: []byte("d"), Node: h},
		wire.TypePastOffer:        wire.PastOffer{From: h, Round: 2, Entries: []wire.PastOfferEntry{{Kind: 1, Key: k, Version: 1, Remaining: 10}}},
		wire.TypePastWatch:        wire.PastWatch{Key: k, Watcher: h, TTL: 60, Fanout: true},
		wire.TypeGlacierStore:     wire.GlacierStore{Req: 1, Origin: h, Record: rec, Cap: 4, Skips: 1, Lease: 100},
		wire.TypeGlacierFragments: wire.GlacierFragments{Req: 1, From: h, Records: []wire.GlacierRecord{rec, {}}, Index: 2, Last: true},
		wire.TypeGlacierHolding:   wire.GlacierHolding{Bundle: id.FromUint64(1, 2), Manifest: k, N: 10, Indices: []uint16{1, 2, 40}, Holder: h},
		wire.TypeGlacierRenew:     wire.GlacierRenew{Bundle: id.FromUint64(1, 2), Owner: id.FromUint64(3, 4), Index: 1, Lease: 5, Skips: 2},
		wire.TypeGlacierAudit:     wire.GlacierAudit{Holder: h, Entries: []wire.GlacierAuditEntry{{Bundle: id.FromUint64(1, 2), Manifest: k, N: 10, Indices: []uint16{1, 2}}}, Hops: 1},
		wire.TypeGlacierRelease:   wire.GlacierRelease{Owner: id.FromUint64(3, 4), Seq: 7, Index: 1, Skips: 2, Manifest: []byte{1, 2}},
		60000:                     wire.PastReceiptBody{Kind: 1, Key: k, Version: 2, Renew: true, Node: [16]byte{9}},
	} {
		f.Add(uint16(slices.Index(types, t)), wire.MustMarshal(v))
	}
	f.Add(uint16(slices.Index(types, wire.TypeRowReply)), []byte{0x83, 0x82, 0x50}) // truncated
	f.Fuzz(func(t *testing.T, typ uint16, b []byte) {
		bodies[types[int(typ)%len(types)]](t, b)
	})
}
