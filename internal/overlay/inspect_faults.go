package overlay

import "github.com/epost-mail/epost/internal/id"

// IndirectVia reports whether this node reaches node x only through a
// helper (a routing anomaly, DESIGN.md section 4), and which helper its
// messages to x are relayed through. Read-only: for tests and status
// displays.
func (o *Overlay) IndirectVia(x id.ID) (NodeHandle, bool) {
	h, ok := o.via[x]
	return h, ok
}
