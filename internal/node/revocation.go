package node

// revocationMeta is where the store keeps the newest revocation list.
const revocationMeta = "identity/revocation"

// AdoptRevocation takes a revocation list (from the community's data
// directory, say): if it is newer than the one held, every layer enforces
// it from now on, revoked peers are disconnected, every hello passes it
// on, and the store keeps it. It reports whether the list was newer.
// Safe to call from any goroutine.
func (n *Node) AdoptRevocation(list []byte) (bool, error) {
	adopted, err := n.verifier.Adopt(list)
	if err != nil || !adopted {
		return false, err
	}
	n.tr.RevocationChanged()
	n.keepRevocation(list)
	return true, nil
}

// keepRevocation stores an adopted list, so a restart keeps enforcing it.
func (n *Node) keepRevocation(list []byte) {
	n.log.Info("revocation list adopted", "epoch", n.verifier.Epoch())
	if n.st == nil {
		return
	}
	if err := n.st.SetMeta(revocationMeta, list); err != nil {
		n.log.Error("keep the revocation list", "err", err)
	}
}

// RevocationEpoch is the epoch of the revocation list the node enforces.
func (n *Node) RevocationEpoch() uint64 { return n.verifier.Epoch() }
