package node

import (
	"errors"
	"fmt"

	"github.com/epost-mail/epost/internal/glacier"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// chainState is where the archive's chain stands for one user, kept in the
// store's metadata so that a restarted node continues it.
type chainState struct {
	_    struct{} `cbor:",toarray"`
	Seq  uint64
	Prev [32]byte
}

func chainMeta(user id.ID) string { return "glacier/chain/" + user.String() }

// wireArchive connects POST to the archive: each user served here becomes
// an archive owner, continuing their chain where the store says it stands
// (or, with no record, where the network says it ends), and every object
// their mailbox needs is queued for it once durable.
func (n *Node) wireArchive() {
	g := n.gl
	g.OnSealed = func(owner id.ID, next uint64, prev glacier.Hash) {
		b := wire.MustMarshal(chainState{Seq: next, Prev: prev})
		if err := n.st.SetMeta(chainMeta(owner), b); err != nil {
			n.log.Error("glacier: record chain position", "err", err)
		}
	}
	n.post.OnAddUser = func(keys identity.UserKeys, cert *identity.UserCert) {
		var cs chainState
		known := false
		if b, err := n.st.GetMeta(chainMeta(cert.UserID.ID)); err == nil && wire.Unmarshal(b, &cs) == nil {
			known = true
		}
		if err := g.AddOwner(keys.Address, keys.Signing, cert.Bytes(), cs.Seq, cs.Prev, known); err != nil {
			n.log.Error("glacier: add owner", "user", keys.Address, "err", err)
			return
		}
		n.requeue(cert.UserID, g.Unarchived(cert.UserID.ID))
	}
	n.post.Archive = func(user id.UserID, kind object.Kind, key object.Key, data []byte) {
		if err := g.Archive(user.ID, glacier.Object{Key: key, Kind: uint8(kind), Data: data}); err != nil {
			n.log.Warn("glacier: archive", "user", user.Short(), "err", err)
		}
	}
}

// requeue gives the archive again what it had queued for user when the
// node stopped, reading each object back from PAST.
func (n *Node) requeue(user id.UserID, refs []glacier.ObjectRef) {
	if len(refs) > 0 {
		n.log.Info("glacier: queueing again what was not archived before the restart", "user", user.Short(), "objects", len(refs))
	}
	archive := func(r glacier.ObjectRef, data []byte) {
		if err := n.gl.Archive(user.ID, glacier.Object{Key: r.Key, Kind: r.Kind, Data: data}); err != nil {
			n.log.Warn("glacier: archive", "user", user.Short(), "err", err)
		}
	}
	for _, r := range refs {
		switch object.Kind(r.Kind) {
		case object.KindImmutable:
			n.past.Lookup(object.Key(r.Key), func(b []byte, err error) {
				if err != nil {
					n.log.Warn("glacier: object to archive again not found", "key", object.Key(r.Key).Short(), "err", err)
					return
				}
				archive(r, b)
			})
		case object.KindMutable:
			n.past.LookupMutable(object.Key(r.Key), func(res past.MutableResult, err error) {
				if err != nil || len(res.Versions) == 0 {
					n.log.Warn("glacier: object to archive again not found", "key", object.Key(r.Key).Short(), "err", err)
					return
				}
				archive(r, res.Versions[0].Encode())
			})
		}
	}
}

// Archive returns the node's archive (Glacier), nil without a DataDir. Use
// it only inside Do or Post: it belongs to the loop goroutine.
func (n *Node) Archive() *glacier.Glacier { return n.gl }

// ErrNoArchive: the node runs no archive (no DataDir).
var ErrNoArchive = errors.New("node: no archive on this node")

// RecoverArchive rebuilds a user's mailbox data in PAST from the archive
// alone, for when every PAST replica of it is gone: it walks the user's
// chain of bundles, re-inserts every immutable object, and the latest
// version of every signed mutable object (folder heads, the root record,
// the certificate, the key backup), which PAST verifies as it would any
// other. Serving the user afterwards (POST's AddUser) loads the mailbox
// as usual. done runs on the loop with the number of objects restored.
// Call it on the loop (inside Do or Post).
func (n *Node) RecoverArchive(user id.UserID, done func(restored int, err error)) {
	n.RecoverArchiveProgress(user, nil, done)
}

// RecoverArchiveProgress is RecoverArchive that also reports, after each
// bundle read, how many bundles and objects it has read so far.
func (n *Node) RecoverArchiveProgress(user id.UserID, progress func(bundles, objects int), done func(restored int, err error)) {
	bundles, objects := 0, 0
	if n.gl == nil {
		done(0, ErrNoArchive)
		return
	}
	lease := past.LeaseMailbox
	restored, pending, walked := 0, 0, false
	var firstErr error
	latest := map[object.Key]*past.Mutable{}
	finish := func() {
		if walked && pending == 0 {
			done(restored, firstErr)
		}
	}
	inserted := func(err error) {
		pending--
		if err != nil && firstErr == nil {
			firstErr = err
		}
		if err == nil {
			restored++
		}
		finish()
	}
	n.gl.Recover(user.ID, 0, glacier.Hash{}, func(b *glacier.Bundle, _ *glacier.Manifest) {
		bundles++
		objects += len(b.Objects)
		if progress != nil {
			progress(bundles, objects)
		}
		for _, o := range b.Objects {
			switch object.Kind(o.Kind) {
			case object.KindImmutable:
				pending++
				n.past.Insert(o.Data, lease, func(_ past.InsertResult, err error) { inserted(err) })
			case object.KindMutable:
				m, err := past.DecodeMutable(o.Data)
				if err != nil {
					n.log.Warn("archive recovery: undecodable mutable object", "err", err)
					continue
				}
				k := object.Key(o.Key)
				if old := latest[k]; old == nil || m.Version >= old.Version {
					latest[k] = m
				}
			}
		}
	}, func(next uint64, _ glacier.Hash, err error) {
		if err != nil {
			firstErr = fmt.Errorf("node: recover archive of %s: %w", user.Short(), err)
		}
		n.log.Info("archive recovery: chain read", "user", user.Short(), "bundles", next, "mutable", len(latest))
		for _, m := range latest {
			pending++
			n.past.InsertMutable(m, lease, func(_ past.InsertResult, err error) { inserted(err) })
		}
		walked = true
		finish()
	})
}
