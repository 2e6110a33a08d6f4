package node

import (
	"errors"
	"fmt"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/glacier"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/post"
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
	g.OnChainPlaced = n.noteArchiveRoot
	n.post.OnAddUser = func(keys identity.UserKeys, cert *identity.UserCert) {
		n.archiveUsers[cert.UserID.ID] = keys.Address
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

// archiveRootWriter coalesces one user's root record writes of the
// archive's chain end: a bundle is placed every few minutes per busy user,
// and each root write is a PAST mutable insert (and is archived in turn),
// so at most one is in flight and the latest position waits for it.
type archiveRootWriter struct {
	busy    bool
	pending bool
	want    post.ArchiveRoot
}

// archiveRootRetry is how long a root write that failed (the mailbox
// not loaded yet, or the insert failing) waits before it is tried again.
const archiveRootRetry = 10 * env.Second

// noteArchiveRoot hears that bundle seq of owner's chain, with manifest
// hash mh, is placed, and records it in the owner's root record. The root
// record is itself archived after it changes, in a later bundle, so the
// position it names lags at least one bundle behind the chain's true end:
// recovery takes it as a position the chain reaches at least.
func (n *Node) noteArchiveRoot(owner id.ID, seq uint64, mh glacier.Hash, objects [][32]byte) {
	addr, ok := n.archiveUsers[owner]
	if !ok {
		return
	}
	// A bundle that holds nothing but root records is the echo of an
	// earlier root write: recording it would write the root again, which
	// would be archived in another bundle, and so on forever.
	rk := post.RootKey(id.ForUser(addr))
	echo := true
	for _, k := range objects {
		echo = echo && k == [32]byte(rk)
	}
	if echo {
		return
	}
	w := n.archiveRoots[owner]
	if w == nil {
		w = &archiveRootWriter{}
		n.archiveRoots[owner] = w
	}
	if w.pending && seq <= w.want.Seq {
		return
	}
	w.want, w.pending = post.ArchiveRoot{Seq: seq, Manifest: mh}, true
	n.writeArchiveRoot(owner, w)
}

func (n *Node) writeArchiveRoot(owner id.ID, w *archiveRootWriter) {
	if w.busy || !w.pending {
		return
	}
	a := n.post.User(n.archiveUsers[owner])
	if a == nil {
		return // no longer served here: its next node records its own bundles
	}
	r := w.want
	w.busy, w.pending = true, false
	a.SetArchiveRoot(r, func(err error) {
		w.busy = false
		if err != nil {
			if !w.pending || w.want.Seq < r.Seq {
				w.want, w.pending = r, true
			}
			n.log.Debug("glacier: record the chain end in the root record", "user", a.Address(), "seq", r.Seq, "err", err)
			n.loop.AfterFunc(archiveRootRetry, func() { n.writeArchiveRoot(owner, w) })
			return
		}
		n.writeArchiveRoot(owner, w)
	})
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
	n.RecoverArchiveWith(user, nil, progress, done)
}

// RecoverArchiveWith is RecoverArchiveProgress that also checks the chain
// against the user's root record, which names a position the chain
// reaches at least: positions up to it that the walk does not find are
// reported as lost (glacier.ErrLost), not taken for the chain's end.
// openKeys, if not nil, opens the user's key backup (nil if none was
// found), to read the root record with. The root record is looked for in PAST (any replica that
// survived) before the walk and in the archive during it, and the newest
// is used. Only a root record from outside the chain can reveal a lost
// tail: one found in the archive was archived after the bundle it names,
// so it never names a position past what the walk has found.
func (n *Node) RecoverArchiveWith(user id.UserID, openKeys func(backup []byte) (identity.UserKeys, error), progress func(bundles, objects int), done func(restored int, err error)) {
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
	// What PAST still holds of the root record and the key backup.
	var pastRoot, pastBackup *past.Mutable
	newest := func(a, b *past.Mutable) *past.Mutable {
		if a == nil || (b != nil && b.Version > a.Version) {
			return b
		}
		return a
	}
	var keys *identity.UserKeys
	floor := func() (uint64, bool) {
		root := newest(latest[post.RootKey(user)], pastRoot)
		if openKeys == nil || root == nil {
			return 0, false
		}
		if keys == nil {
			var backup []byte
			if b := newest(latest[past.MutableKey(user, "keybackup")], pastBackup); b != nil {
				backup = b.Data
			}
			k, err := openKeys(backup)
			if err != nil {
				n.log.Warn("archive recovery: key backup does not open", "user", user.Short(), "err", err)
				return 0, false
			}
			keys = &k
		}
		r, err := post.OpenArchiveRoot(*keys, root.Data)
		if err != nil || r == (post.ArchiveRoot{}) {
			return 0, false
		}
		return r.Seq, true
	}
	walk := func() {
		n.gl.RecoverFloor(user.ID, 0, glacier.Hash{}, floor, func(b *glacier.Bundle, _ *glacier.Manifest) {
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
			for k, m := range latest {
				// PAST refuses a version older than one it holds.
				if have := map[object.Key]*past.Mutable{post.RootKey(user): pastRoot, past.MutableKey(user, "keybackup"): pastBackup}[k]; have != nil && have.Version >= m.Version {
					continue
				}
				pending++
				n.past.InsertMutable(m, lease, func(_ past.InsertResult, err error) { inserted(err) })
			}
			walked = true
			finish()
		})
	}
	if openKeys == nil {
		walk()
		return
	}
	lookups := 2
	look := func(name string, into **past.Mutable) {
		n.past.LookupMutable(past.MutableKey(user, name), func(res past.MutableResult, err error) {
			if err == nil {
				for _, m := range res.Versions {
					if id.ForUser(m.Address) == user {
						*into = newest(*into, m)
					}
				}
			}
			if lookups--; lookups == 0 {
				walk()
			}
		})
	}
	look("root", &pastRoot)
	look("keybackup", &pastBackup)
}
