package overlay

import (
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/sim"
	"github.com/epost-mail/epost/internal/wire"
)

// nopApp ignores upcalls.
type nopApp struct{ delivered []Message }

func (a *nopApp) Deliver(m Message)                        { a.delivered = append(a.delivered, m) }
func (a *nopApp) Forward(*Message, NodeHandle) bool        { return true }
func (a *nopApp) Direct(NodeHandle, []byte)                {}
func (a *nopApp) LeafSetChanged(h NodeHandle, joined bool) {}

// rawHost sends whatever bytes a test gives it.
type rawHost struct{ e env.Env }

func (r *rawHost) Receive(env.Addr, []byte) {}

// single boots one overlay node that creates a ring, and a raw host that
// can send it arbitrary bytes.
func single(t *testing.T) (*sim.Sim, *Overlay, *rawHost) {
	t.Helper()
	s := sim.New(sim.DefaultConfig(1))
	var o *Overlay
	s.Add(func(e env.Env) sim.Process {
		o = New(DefaultConfig(), e, NodeHandle{ID: id.NodeID{ID: id.FromUint64(1, 1)}, Addr: string(e.Self)}, &nopApp{})
		o.Create()
		return o
	})
	raw := &rawHost{}
	s.Add(func(e env.Env) sim.Process { raw.e = e; return raw })
	return s, o, raw
}

func TestMalformedMessagesAreDroppedAndCounted(t *testing.T) {
	s, o, raw := single(t)
	inputs := [][]byte{
		nil,
		{0xff},
		wire.MustMarshal(wire.Envelope{Version: wire.Version, Type: wire.TypeProbe, Body: []byte{0x01}}),
		wire.MustMarshal(wire.Envelope{Version: wire.Version, Type: 999, Body: wire.MustMarshal(wire.Ping{})}),
		wire.MustMarshal(wire.Envelope{Version: wire.Version, Type: wire.TypeRoute, Body: wire.MustMarshal([]any{1, 2, 3})}),
	}
	for _, in := range inputs {
		raw.e.Net.Send(s.Addr(0), in)
	}
	s.RunFor(env.Second)
	if got := o.Stats().Malformed; got != uint64(len(inputs)) {
		t.Fatalf("Malformed = %d, want %d", got, len(inputs))
	}
}

func TestForgedSenderIsDroppedAndCounted(t *testing.T) {
	s, o, raw := single(t)
	other := NodeHandle{ID: id.NodeID{ID: id.FromUint64(9, 9)}, Addr: "sim/77"} // not the real sender
	msg, _ := wire.Encode(wire.TypeProbe, wire.Probe{From: other, Nonce: 1, Flags: wire.ProbeWantReply})
	raw.e.Net.Send(s.Addr(0), msg)
	self := o.Self()
	selfMsg, _ := wire.Encode(wire.TypeHeartbeat, wire.Heartbeat{From: NodeHandle{ID: self.ID, Addr: string(raw.e.Self)}})
	raw.e.Net.Send(s.Addr(0), selfMsg) // our own id from another address
	s.RunFor(env.Second)
	if got := o.Stats().Unauthenticated; got != 2 {
		t.Fatalf("Unauthenticated = %d, want 2", got)
	}
	if o.Leaf().Len() != 0 {
		t.Fatal("a forged sender entered the leaf set")
	}
	// The Authenticate hook can refuse an honest-looking claim too.
	o.Authenticate = func(env.Addr, id.NodeID) bool { return false }
	ok, _ := wire.Encode(wire.TypeHeartbeat, wire.Heartbeat{From: NodeHandle{ID: id.NodeID{ID: id.FromUint64(5, 5)}, Addr: string(raw.e.Self)}})
	raw.e.Net.Send(s.Addr(0), ok)
	s.RunFor(env.Second)
	if got := o.Stats().Unauthenticated; got != 3 {
		t.Fatalf("Unauthenticated = %d after hook refusal, want 3", got)
	}
}

func TestSingleNodeDeliversEverythingToItself(t *testing.T) {
	s, o, _ := single(t)
	app := o.app.(*nopApp)
	for i := 0; i < 10; i++ {
		o.Route(id.FromUint64(uint64(i)<<60, 0), []byte{byte(i)})
	}
	s.RunFor(env.Second)
	if len(app.delivered) != 10 || app.delivered[3].Payload[0] != 3 || app.delivered[3].Hops != 0 {
		t.Fatalf("delivered %v", app.delivered)
	}
}

func TestRoutingTableSlots(t *testing.T) {
	self, _ := id.Parse("a1b2c3d4000000000000000000000000")
	rt := NewRoutingTable(self)
	mk := func(s string) NodeHandle {
		x, err := id.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return handle(x)
	}
	cases := []struct {
		h        NodeHandle
		row, col int
	}{
		{mk("00000000000000000000000000000001"), 0, 0},
		{mk("f0000000000000000000000000000000"), 0, 15},
		{mk("a2000000000000000000000000000000"), 1, 2},
		{mk("a1b2c3d5000000000000000000000000"), 7, 5},
		{mk("a1b2c3d4000000000000000000000001"), 31, 1},
	}
	for _, c := range cases {
		if r, col := rt.Slot(c.h.ID.ID); r != c.row || col != c.col {
			t.Errorf("Slot(%s) = %d,%d want %d,%d", c.h.ID.Short(), r, col, c.row, c.col)
		}
		rt.Set(c.h)
	}
	if rt.Len() != len(cases) || rt.Rows() != 32 {
		t.Fatalf("Len %d Rows %d", rt.Len(), rt.Rows())
	}
	rt.Set(handle(self)) // self never enters its own table
	if rt.Len() != len(cases) {
		t.Fatal("self entered the table")
	}
	for i := 0; i < len(cases); i++ {
		if _, ok := rt.At(i); !ok {
			t.Fatalf("At(%d) missing", i)
		}
	}
	if _, ok := rt.At(len(cases)); ok {
		t.Fatal("At past the end")
	}
	replacement := mk("a2ffffff000000000000000000000000")
	rt.Set(replacement)
	if h, _ := rt.Get(1, 2); h.ID != replacement.ID || rt.Len() != len(cases) {
		t.Fatal("replacing an entry changed the count or missed")
	}
	if rt.Remove(cases[2].h.ID.ID) {
		t.Fatal("removed an id that was already replaced")
	}
	if !rt.Remove(replacement.ID.ID) || rt.Contains(replacement.ID.ID) || rt.Len() != len(cases)-1 {
		t.Fatal("remove failed")
	}
}

func TestLeafSetCoversAndEvicts(t *testing.T) {
	self := id.FromUint64(1<<63, 0)
	ls := NewLeafSet(self, 4)
	if !ls.Covers(id.FromUint64(0, 5)) {
		t.Fatal("an empty leaf set knows the whole ring")
	}
	step := uint64(1) << 40
	var added []NodeHandle
	for i := uint64(1); i <= 3; i++ {
		h := handle(self.Add(id.FromUint64(i*step, 0)))
		ls.Add(h)
		added = append(added, h)
		ls.Add(handle(self.Sub(id.FromUint64(i*step, 0))))
	}
	// Sides hold 2; the third on each side was evicted.
	if len(ls.Right()) != 2 || len(ls.Left()) != 2 || ls.Contains(added[2].ID.ID) {
		t.Fatalf("sides %d/%d", len(ls.Left()), len(ls.Right()))
	}
	if !ls.Covers(self.Add(id.FromUint64(step, 0))) || ls.Covers(self.Add(id.FromUint64(5*step, 0))) {
		t.Fatal("coverage wrong")
	}
	nearer := handle(self.Add(id.FromUint64(step/2, 0)))
	changed, evicted := ls.Add(nearer)
	if !changed || len(evicted) != 1 || evicted[0].ID != added[1].ID {
		t.Fatalf("adding a nearer node: changed=%v evicted=%v", changed, evicted)
	}
	if n, _ := ls.RightNeighbour(); n.ID != nearer.ID {
		t.Fatal("nearest is not first")
	}
}

func FuzzReceive(f *testing.F) {
	h := NodeHandle{ID: id.NodeID{ID: id.FromUint64(7, 7)}, Addr: "sim/1"}
	seeds := []struct {
		t wire.Type
		v any
	}{
		{wire.TypeRoute, wire.Route{Hop: 1, Kind: wire.RouteApp, Key: id.FromUint64(3, 3), Src: h, Sender: h, Payload: []byte("x")}},
		{wire.TypeRoute, wire.Route{Hop: 2, Kind: wire.RouteJoin, Key: id.FromUint64(7, 7), Src: h, Sender: h, Rows: []NodeHandle{h}}},
		{wire.TypeRouteAck, wire.RouteAck{From: h, Hop: 1}},
		{wire.TypeJoinReply, wire.JoinReply{From: h, Leaf: []NodeHandle{h}}},
		{wire.TypeProbe, wire.Probe{From: h, Nonce: 1, Flags: wire.ProbeWantReply | wire.ProbeWantLeaf, Leaf: []NodeHandle{h}, Dead: []id.NodeID{h.ID}}},
		{wire.TypeProbeReply, wire.ProbeReply{From: h, Nonce: 1, Leaf: []NodeHandle{h}}},
		{wire.TypeHeartbeat, wire.Heartbeat{From: h, Leaf: []NodeHandle{h}}},
		{wire.TypeRowRequest, wire.RowRequest{From: h, Row: 40}},
		{wire.TypeRowReply, wire.RowReply{From: h, Row: 1, Entries: []NodeHandle{h}}},
		{wire.TypeDirect, wire.Direct{From: h, Payload: []byte("d")}},
	}
	for _, sd := range seeds {
		b, err := wire.Encode(sd.t, sd.v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, o, raw := single(t)
		raw.e.Net.Send(s.Addr(0), b)
		s.RunFor(10 * env.Second)
		_ = o.Stats()
	})
}

// TestNoPingPongBetweenLeafAndPrefixRouting: a node whose leaf set has a
// gap filled by a far node believes it covers keys it does not; the far
// node routes such a key back to it by prefix. Sending it back to the
// node it came from would loop, so the node routes by prefix instead.
func TestNoPingPongBetweenLeafAndPrefixRouting(t *testing.T) {
	_, o, _ := single(t)
	h := func(hi uint64) NodeHandle { return NodeHandle{ID: id.NodeID{ID: id.FromUint64(hi, 0)}, Addr: "x"} }
	o.self = h(0x4146501100000000)
	o.leaf = NewLeafSet(o.self.ID.ID, 24)
	o.table = NewRoutingTable(o.self.ID.ID)
	for i := uint64(1); i <= 11; i++ {
		o.leaf.Add(h(0x4146501100000000 + i<<24))
		o.leaf.Add(h(0x4146501100000000 - i<<24))
	}
	o.leaf.Add(h(0x4146501100000000 - 12<<24))
	far := h(0x52f37b7b00000000) // the gap's filler: the 12th on the right
	o.leaf.Add(far)
	near := h(0x4c00000000000000) // a routing-table entry with a longer prefix
	o.table.Set(near)
	key := id.FromUint64(0x4c6a98a100000000, 0)
	if !o.leaf.Covers(key) {
		t.Fatal("test setup: the leaf set should (wrongly) cover the key")
	}
	next, root := o.nextHopFor(wire.Route{Kind: wire.RouteApp, Key: key, Sender: h(0x1000000000000000)}, nil)
	if root || next.ID != far.ID {
		t.Fatalf("from elsewhere: next %s, want the far leaf member", next.ID.ID.Short())
	}
	next, root = o.nextHopFor(wire.Route{Kind: wire.RouteApp, Key: key, Sender: far}, nil)
	if root || next.ID != near.ID {
		t.Fatalf("from the far member: next %s, want the table entry, not back", next.ID.ID.Short())
	}
}
