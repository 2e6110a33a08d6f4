package post

import (
	"encoding/hex"
	"errors"
	"fmt"
	"sort"

	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

func (a *Account) rootName() string { return "root" }

func (a *Account) localRootName() string {
	return "post/root/" + hex.EncodeToString(a.cert.UserID.ID[:])
}

// localRoot is the root record this node last wrote: version and sealed
// bytes.
type localRoot struct {
	_       struct{} `cbor:",toarray"`
	Version uint64
	Sealed  []byte
}

// loadRoot reads the user's root record and every folder, or creates the
// default mailbox for a new user.
func (a *Account) loadRoot() {
	x := a.x
	var local localRoot
	if b, err := x.local.GetMeta(a.localRootName()); err == nil {
		if wire.Unmarshal(b, &local) != nil {
			local = localRoot{}
		}
	}
	if a.loadRootCached(local) {
		return
	}
	x.past.LookupMutable(past.MutableKey(a.cert.UserID, a.rootName()), func(res past.MutableResult, err error) {
		var mine *rootRecord
		if local.Version > 0 {
			mine, _ = a.openRoot(local.Sealed)
		}
		if mine != nil && err != nil {
			// The network does not answer, or lost the root: what this
			// node wrote holds, and goes back.
			a.root, a.rootVer, a.rootID = mine, local.Version-1, [32]byte{}
			a.writeRoot(func(error) {})
			a.loadFolders()
			return
		}
		if errors.Is(err, past.ErrNotFound) {
			a.createRoot()
			return
		}
		if err != nil {
			a.retryLoad(err)
			return
		}
		// A forked root (two nodes wrote one version) merges (mergeRoots).
		var root *rootRecord
		for _, m := range res.Versions {
			r, err := a.openRoot(m.Data)
			if err != nil {
				continue
			}
			if root == nil {
				root = r
				continue
			}
			root = mergeRoots(root, r)
		}
		if root == nil {
			a.retryLoad(fmt.Errorf("post: %s: root record unreadable", a.keys.Address))
			return
		}
		a.adoptRoot(mine, local.Version, root, res.Versions[0].Version, res.Forked())
		a.loadFolders()
	})
}

func (a *Account) retryLoad(err error) {
	a.x.env.Log.Warn("post: loading mailbox failed; retrying", "user", a.keys.Address, "err", err)
	a.x.env.Clock.AfterFunc(a.x.cfg.WatchPeriod/4, a.loadRoot)
}

func (a *Account) createRoot() {
	r := &rootRecord{Writer: a.x.node.Cert.NodeID.ID, Certs: []certRef{a.certRef()}}
	for _, name := range DefaultFolders {
		r.Folders = append(r.Folders, a.newFolderInfo(name))
	}
	a.root, a.rootVer = r, 0
	a.writeRoot(func(err error) {
		if err != nil {
			// Most likely a root exists that we could not read: read again.
			a.retryLoad(err)
			return
		}
		a.loadFolders()
	})
}

func (a *Account) newFolderInfo(name string) folderInfo {
	var fid [16]byte
	a.x.env.Rand.Read(fid[:])
	return folderInfo{Name: name, ID: fid, UIDValidity: uidValidity(fid)}
}

// writeRoot stores the next version of the root record.
func (a *Account) writeRoot(done func(error)) {
	sort.Slice(a.root.Folders, func(i, j int) bool { return a.root.Folders[i].Name < a.root.Folders[j].Name })
	if a.rootID != ([32]byte{}) {
		a.root.History = append([][32]byte{a.rootID}, a.root.History[:min(len(a.root.History), rootHistory-1)]...)
	}
	a.rootID = rootID(a.root)
	a.rootVer++
	sealed := SealEntry(randReader{a.x.env.Rand}, a.logKeys[0], wire.MustMarshal(a.root))
	m, err := past.SignMutable(a.keys, a.cert, a.rootName(), a.rootVer, sealed)
	if err != nil {
		done(err)
		return
	}
	if err := a.x.local.SetMeta(a.localRootName(), wire.MustMarshal(localRoot{Version: a.rootVer, Sealed: sealed})); err != nil {
		done(err)
		return
	}
	a.x.past.InsertMutable(m, a.x.cfg.MailLease, func(_ past.InsertResult, err error) {
		if err == nil {
			a.archiveMutable(m)
		}
		done(err)
	})
}

// loadFolders rebuilds every folder from its log, then the account is
// ready.
func (a *Account) loadFolders() {
	changed := a.noteCert()
	if me := a.x.node.Cert.NodeID.ID; a.root.Writer != me {
		// This node takes the mailbox over (a restored or moved user): the
		// root record names the one node that writes.
		a.root.Writer = me
		changed = true
	}
	if changed {
		a.writeRoot(func(err error) {
			if err != nil {
				a.x.env.Log.Warn("post: writing the root record", "user", a.keys.Address, "err", err)
			}
		})
	}
	n := len(a.root.Folders)
	if n == 0 {
		a.becomeReady(nil)
		return
	}
	var firstErr error
	for _, info := range a.root.Folders {
		f := a.folders[info.Name]
		if f == nil {
			f = a.newFolder(info)
			a.folders[info.Name] = f
		}
		f.open(func(err error) {
			if err != nil && firstErr == nil {
				firstErr = err
			}
			n--
			if n > 0 {
				return
			}
			if firstErr != nil {
				a.folders = map[string]*Folder{}
				a.delivered = map[[16]byte]bool{}
				a.usage, a.bodies = 0, map[object.Key]int{}
				a.retryLoad(firstErr)
				return
			}
			a.becomeReady(nil)
		})
	}
}

// renew extends the leases of everything the account references:
// bodies, log entries, heads, root and certificate. Unreferenced objects
// (expunged mail, superseded entries) are left to expire.
func (a *Account) renew() {
	x := a.x
	lease := x.cfg.MailLease
	ok := func(past.InsertResult, error) {}
	for _, name := range sortedNames(a.folders) {
		f := a.folders[name]
		for _, m := range f.Messages() {
			for _, c := range m.Body.Chunks {
				x.past.Renew(object.KindImmutable, c, lease, ok)
			}
		}
		for _, k := range f.entries {
			x.past.Renew(object.KindImmutable, k, lease, ok)
		}
		x.past.Renew(object.KindMutable, past.MutableKey(a.cert.UserID, f.headName()), lease, ok)
	}
	x.past.Renew(object.KindMutable, past.MutableKey(a.cert.UserID, a.rootName()), lease, ok)
	x.past.Renew(object.KindMutable, CertKey(a.cert.UserID), lease, ok)
	x.env.Clock.AfterFunc(x.cfg.RenewPeriod, a.renew)
}
