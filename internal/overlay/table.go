package overlay

import (
	"github.com/epost-mail/epost/internal/id"
)

// RoutingTable is Pastry's prefix table: row r holds, for each digit d, a
// node sharing the first r digits with this node and having d as digit r.
// Rows are allocated when first used; most of the 32 rows stay empty.
type RoutingTable struct {
	self id.ID
	rows [id.Digits]*[id.Base]NodeHandle
	n    int
}

// NewRoutingTable returns an empty table for self.
func NewRoutingTable(self id.ID) *RoutingTable { return &RoutingTable{self: self} }

// Slot returns the row and column where x belongs.
func (t *RoutingTable) Slot(x id.ID) (row, col int) {
	row = t.self.SharedPrefix(x)
	if row >= id.Digits {
		return row, 0
	}
	return row, x.Digit(row)
}

// Get returns the entry at row, col.
func (t *RoutingTable) Get(row, col int) (NodeHandle, bool) {
	if row >= id.Digits || t.rows[row] == nil {
		return NodeHandle{}, false
	}
	h := t.rows[row][col]
	return h, !h.ID.IsZero()
}

// Lookup returns the entry in x's slot.
func (t *RoutingTable) Lookup(x id.ID) (NodeHandle, bool) { return t.Get(t.Slot(x)) }

// Set puts h in its slot, replacing whatever was there. The zero id marks
// an empty slot and is never stored (no CA issues it).
func (t *RoutingTable) Set(h NodeHandle) {
	row, col := t.Slot(h.ID.ID)
	if row >= id.Digits || h.ID.IsZero() {
		return // this node itself, or no node
	}
	if t.rows[row] == nil {
		t.rows[row] = new([id.Base]NodeHandle)
	}
	if t.rows[row][col].ID.IsZero() {
		t.n++
	}
	t.rows[row][col] = h
}

// Remove clears x's slot if x is in it; it reports whether it was.
func (t *RoutingTable) Remove(x id.ID) bool {
	row, col := t.Slot(x)
	if row >= id.Digits || t.rows[row] == nil || t.rows[row][col].ID.ID != x {
		return false
	}
	t.rows[row][col] = NodeHandle{}
	t.n--
	return true
}

// Contains reports whether x is in the table.
func (t *RoutingTable) Contains(x id.ID) bool {
	h, ok := t.Lookup(x)
	return ok && h.ID.ID == x
}

// Len is the number of entries.
func (t *RoutingTable) Len() int { return t.n }

// Row returns the non-empty entries of row r.
func (t *RoutingTable) Row(r int) []NodeHandle {
	if r >= id.Digits || t.rows[r] == nil {
		return nil
	}
	var out []NodeHandle
	for _, h := range t.rows[r] {
		if !h.ID.IsZero() {
			out = append(out, h)
		}
	}
	return out
}

// Rows returns the number of rows that hold at least one entry, counting
// up to the last non-empty row.
func (t *RoutingTable) Rows() int {
	last := 0
	for r := range t.rows {
		if t.rows[r] != nil && len(t.Row(r)) > 0 {
			last = r + 1
		}
	}
	return last
}

// All returns every entry, row by row.
func (t *RoutingTable) All() []NodeHandle {
	var out []NodeHandle
	for r := range t.rows {
		out = append(out, t.Row(r)...)
	}
	return out
}

// At returns the i-th entry in row-major order, without allocating.
func (t *RoutingTable) At(i int) (NodeHandle, bool) {
	for r := range t.rows {
		if t.rows[r] == nil {
			continue
		}
		for _, h := range t.rows[r] {
			if h.ID.IsZero() {
				continue
			}
			if i == 0 {
				return h, true
			}
			i--
		}
	}
	return NodeHandle{}, false
}
