package overlay

import (
	"github.com/epost-mail/epost/internal/id"
)

// LeafSet holds the nodes numerically closest to this node: up to half its
// size on each side of the ring. Left is counter-clockwise (smaller ids,
// wrapping), right is clockwise; each side is sorted nearest first. In a
// ring smaller than the leaf set a node can sit on both sides.
type LeafSet struct {
	self  id.ID
	half  int
	left  []NodeHandle
	right []NodeHandle
}

// NewLeafSet returns an empty leaf set of the given total size (even).
func NewLeafSet(self id.ID, size int) *LeafSet {
	return &LeafSet{self: self, half: size / 2}
}

// Left returns the counter-clockwise side, nearest first.
func (l *LeafSet) Left() []NodeHandle { return l.left }

// Right returns the clockwise side, nearest first.
func (l *LeafSet) Right() []NodeHandle { return l.right }

// Members returns every member once: right side then left side.
func (l *LeafSet) Members() []NodeHandle {
	out := make([]NodeHandle, 0, len(l.left)+len(l.right))
	out = append(out, l.right...)
	for _, h := range l.left {
		if !contains(l.right, h.ID.ID) {
			out = append(out, h)
		}
	}
	return out
}

// Len is the number of distinct members.
func (l *LeafSet) Len() int {
	n := len(l.right)
	for _, h := range l.left {
		if !contains(l.right, h.ID.ID) {
			n++
		}
	}
	return n
}

// Contains reports whether x is a member.
func (l *LeafSet) Contains(x id.ID) bool { return contains(l.left, x) || contains(l.right, x) }

// Get returns the member with id x.
func (l *LeafSet) Get(x id.ID) (NodeHandle, bool) {
	for _, s := range [][]NodeHandle{l.right, l.left} {
		for _, h := range s {
			if h.ID.ID == x {
				return h, true
			}
		}
	}
	return NodeHandle{}, false
}

func contains(s []NodeHandle, x id.ID) bool {
	for _, h := range s {
		if h.ID.ID == x {
			return true
		}
	}
	return false
}

// Full reports whether both sides hold their maximum: only then is the
// leaf set's range smaller than the whole ring.
func (l *LeafSet) Full() bool { return len(l.left) == l.half && len(l.right) == l.half }

// WouldAccept reports whether x, if not a member, would enter the leaf set.
func (l *LeafSet) WouldAccept(x id.ID) bool {
	if x == l.self || l.Contains(x) {
		return false
	}
	if len(l.right) < l.half || l.self.CW(x).Cmp(l.self.CW(l.right[len(l.right)-1].ID.ID)) < 0 {
		return true
	}
	return len(l.left) < l.half || l.self.CCW(x).Cmp(l.self.CCW(l.left[len(l.left)-1].ID.ID)) < 0
}

// Add inserts h where it belongs, evicting the farthest member of a full
// side. It reports whether the set changed, and returns the evicted nodes
// that left the set entirely.
func (l *LeafSet) Add(h NodeHandle) (changed bool, evicted []NodeHandle) {
	x := h.ID.ID
	if x == l.self || l.Contains(x) {
		return false, nil
	}
	var out []NodeHandle
	var in bool
	l.right, in, out = insertSide(l.right, h, l.half, func(y id.ID) id.ID { return l.self.CW(y) }, out)
	changed = changed || in
	l.left, in, out = insertSide(l.left, h, l.half, func(y id.ID) id.ID { return l.self.CCW(y) }, out)
	changed = changed || in
	for _, e := range out {
		if !l.Contains(e.ID.ID) {
			evicted = append(evicted, e)
		}
	}
	return changed, evicted
}

func insertSide(side []NodeHandle, h NodeHandle, max int, dist func(id.ID) id.ID, out []NodeHandle) ([]NodeHandle, bool, []NodeHandle) {
	d := dist(h.ID.ID)
	i := 0
	for i < len(side) && dist(side[i].ID.ID).Cmp(d) < 0 {
		i++
	}
	if i >= max {
		return side, false, out
	}
	side = append(side, NodeHandle{})
	copy(side[i+1:], side[i:])
	side[i] = h
	if len(side) > max {
		out = append(out, side[len(side)-1])
		side = side[:max]
	}
	return side, true, out
}

// Remove drops x from both sides; it reports whether x was a member.
func (l *LeafSet) Remove(x id.ID) bool {
	var ok1, ok2 bool
	l.left, ok1 = removeFrom(l.left, x)
	l.right, ok2 = removeFrom(l.right, x)
	return ok1 || ok2
}

func removeFrom(s []NodeHandle, x id.ID) ([]NodeHandle, bool) {
	for i, h := range s {
		if h.ID.ID == x {
			return append(s[:i], s[i+1:]...), true
		}
	}
	return s, false
}

// Covers reports whether key lies within the leaf set's range, where the
// leaf set alone decides the key's root. A leaf set that is not full knows
// the whole ring and covers every key.
func (l *LeafSet) Covers(key id.ID) bool {
	if !l.Full() {
		return true
	}
	lf, rf := l.left[len(l.left)-1].ID.ID, l.right[len(l.right)-1].ID.ID
	return key == lf || key == rf || id.Between(lf, key, rf)
}

// LeftNeighbour is the nearest counter-clockwise member.
func (l *LeafSet) LeftNeighbour() (NodeHandle, bool) {
	if len(l.left) == 0 {
		return NodeHandle{}, false
	}
	return l.left[0], true
}

// RightNeighbour is the nearest clockwise member.
func (l *LeafSet) RightNeighbour() (NodeHandle, bool) {
	if len(l.right) == 0 {
		return NodeHandle{}, false
	}
	return l.right[0], true
}
