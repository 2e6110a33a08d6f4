package post

import (
	"bytes"
	"encoding/hex"
	"errors"
	"slices"

	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// The owner's node serves its folders from its own copy: the head it last
// wrote (Local) is the authority, and a Cache holds the sealed log objects
// (entries and snapshot parts, exactly as stored in PAST, so the disk holds
// nothing in clear that the network does not) back to each folder's last
// checkpoint. On a restart the mailbox is rebuilt from these at once, and
// the network is asked afterwards: a network head this node has not seen
// (another node wrote, or the two sides of a partition diverged) is read
// and merged as a restart without the cache would. A cache that lacks an
// object (lost in a crash, or a new disk) falls back to the network, and
// what is read there is cached again.

// Cache keeps copies of sealed log objects on the owner's node. Writes may
// be lost in a crash (the network still has every object); Get must
// return exactly what was put, or nothing.
type Cache interface {
	GetObject(key object.Key) ([]byte, bool)
	PutObject(key object.Key, data []byte)
	DeleteObject(key object.Key)
}

// errNotCached stops a walk that may read only the cache.
var errNotCached = errors.New("post: not in the local cache")

// fetch reads one of the folder's log objects (an entry or a snapshot
// part): from this node's cache if it holds it, else from the network.
func (f *Folder) fetch(key object.Key, done func([]byte, error)) {
	x := f.a.x
	if x.Cache != nil {
		if b, ok := x.Cache.GetObject(key); ok && sealedKey(b) == key {
			f.noteCached(key)
			done(b, nil)
			return
		}
	}
	if f.cacheOnly {
		done(nil, errNotCached)
		return
	}
	x.past.Lookup(key, func(b []byte, err error) {
		if err == nil && x.Cache != nil {
			if f.fetched == nil {
				f.fetched = map[object.Key][]byte{}
			}
			f.fetched[key] = b
		}
		done(b, err)
	})
}

// cachePut keeps a log object in this node's cache.
func (f *Folder) cachePut(key object.Key, b []byte) {
	if c := f.a.x.Cache; c != nil {
		c.PutObject(key, b)
		f.noteCached(key)
	}
}

func (f *Folder) noteCached(key object.Key) {
	if f.cachedKey == nil {
		f.cachedKey = map[object.Key]bool{}
	}
	f.cachedKey[key] = true
}

// pruneCache drops from the cache what the folder no longer needs: what
// is not in its log back to the last checkpoint (f.entries) nor its head.
// It runs when no flush is under way, or right after one, with its head.
func (f *Folder) pruneCache() {
	c := f.a.x.Cache
	if c == nil {
		return
	}
	keep := map[object.Key]bool{f.head: true}
	for _, k := range f.entries {
		keep[k] = true
	}
	var drop []object.Key
	for k := range f.cachedKey {
		if !keep[k] {
			drop = append(drop, k)
		}
	}
	slices.SortFunc(drop, func(a, b object.Key) int { return bytes.Compare(a[:], b[:]) })
	for _, k := range drop {
		c.DeleteObject(k)
		delete(f.cachedKey, k)
	}
}

// dropCache drops the whole folder from the cache (it was deleted).
func (f *Folder) dropCache() {
	f.entries, f.head = nil, object.Key{}
	f.pruneCache()
}

// cacheChain caches what a load read from the network of the log it
// adopted (f.entries); what it read of other branches is not kept.
func (f *Folder) cacheChain() {
	for _, k := range f.entries {
		if b, ok := f.fetched[k]; ok {
			f.cachePut(k, b)
		}
	}
	f.fetched = nil
}

// checkpointed notes a durable checkpoint: its parts are what the next
// one may reuse, and the log before it need no longer be kept leased or
// cached.
func (f *Folder) checkpointed(chunks []chunkState) {
	f.chunks = chunks
	f.entries = f.entries[:0]
	for _, c := range chunks {
		f.entries = append(f.entries, c.ref.Key)
	}
	f.pruneCache() // (f.head is the checkpoint entry)
}

// open loads the folder for a restart: from the cache if it holds the log
// from the head this node last wrote back to its checkpoint, then checks
// the network in the background; else from the network (load).
func (f *Folder) open(done func(error)) {
	local, ok := f.localHead()
	switch {
	case !f.a.cached:
		f.load(done)
		return
	case !ok:
		// Nothing written here: empty, unless the network says otherwise.
		done(nil)
		f.reconcile()
		return
	}
	f.walked = nil
	f.cacheOnly = true
	f.walk(local.Last, nil, func(chain []entry, err error) {
		f.cacheOnly = false
		if err != nil {
			f.walked = nil
			if !errors.Is(err, errNotCached) {
				f.a.x.env.Log.Warn("post: local folder cache unreadable; reading the network", "folder", f.info.Name, "err", err)
			}
			f.load(done)
			return
		}
		f.a.x.stats.CachedLoads++
		f.replay(chain, local)
		done(nil)
		f.reconcile()
	})
}

// reconcile compares the folder with the network's head: a network that
// lags behind gets this node's head again; a head this node has not seen
// (newer, or the same version written elsewhere) makes it read the
// network and merge, as on a restart without the cache. It retries until
// the network answers.
func (f *Folder) reconcile() {
	x := f.a.x
	again := func() { x.env.Clock.AfterFunc(x.cfg.WatchPeriod/4, f.reconcile) }
	if f.a.retired || f.a.folders[f.info.Name] != f {
		return // deleted, renamed away or taken over meanwhile
	}
	x.past.LookupMutable(past.MutableKey(f.a.cert.UserID, f.headName()), func(res past.MutableResult, err error) {
		if err != nil && !errors.Is(err, past.ErrNotFound) {
			again()
			return
		}
		if f.flushing || f.loading {
			again() // a write or a load is under way: look again after
			return
		}
		newer := false
		var top uint64
		for _, m := range res.Versions {
			var h headData
			if wire.Unmarshal(m.Data, &h) != nil || h.Seq != m.Version {
				continue
			}
			top = max(top, h.Seq)
			newer = newer || h.Seq > f.seq || (h.Seq == f.seq && h.Last != [32]byte(f.head))
		}
		if !newer {
			if top < f.seq {
				f.republishOrRetry(headData{Last: [32]byte(f.head), Seq: f.seq}, again)
			}
			return
		}
		x.env.Log.Info("post: the network holds a folder head this node has not seen; reading it", "folder", f.info.Name)
		f.reload(nil)
	})
}

// loadNew reads a folder another node created from the network, trying
// again until it can; changes made meanwhile wait (as behind a flush).
func (f *Folder) loadNew() {
	x := f.a.x
	f.loading = true
	f.clear()
	f.nextUID, f.seq, f.head, f.sinceSnap, f.entries, f.chunks = 1, 0, object.Key{}, 0, nil, nil
	f.load(func(err error) {
		if err != nil && f.a.folders[f.info.Name] == f && !f.a.retired {
			x.env.Log.Info("post: reading a folder created elsewhere; trying again", "folder", f.info.Name, "err", err)
			x.env.Clock.AfterFunc(x.cfg.WatchPeriod/4, f.loadNew)
			return
		}
		f.loading = false
		f.flush()
	})
}

// republishOrRetry puts h back in the network, calling again if that
// fails.
func (f *Folder) republishOrRetry(h headData, again func()) {
	x := f.a.x
	m, err := past.SignMutable(f.a.keys, f.a.cert, f.headName(), h.Seq, wire.MustMarshal(h))
	if err != nil {
		return
	}
	x.past.InsertMutable(m, x.cfg.MailLease, func(_ past.InsertResult, err error) {
		if err != nil {
			again()
		}
	})
}

// loadRootCached serves the mailbox from the root record this node last
// wrote and the folder cache, at once, then checks the root with the
// network. It reports false if there is no usable local root.
func (a *Account) loadRootCached(local localRoot) bool {
	if a.x.Cache == nil || local.Version == 0 || !a.served() {
		return false
	}
	r, err := a.openRoot(local.Sealed)
	if err != nil {
		return false
	}
	a.root, a.rootVer, a.rootID = r, local.Version, rootID(r)
	a.cached = true
	a.loadFolders() // becomeReady then checks the root with the network
	return true
}

// reconcileRoot compares the root record with the network's: one that
// lags behind gets this node's again; a newer one (written elsewhere) is
// taken: its new folders are read from the network, renames and deletes
// applied.
func (a *Account) reconcileRoot() {
	x := a.x
	again := func() { x.env.Clock.AfterFunc(x.cfg.WatchPeriod/4, a.reconcileRoot) }
	x.past.LookupMutable(past.MutableKey(a.cert.UserID, a.rootName()), func(res past.MutableResult, err error) {
		if err != nil && !errors.Is(err, past.ErrNotFound) {
			again()
			return
		}
		if a.retired {
			return
		}
		a.rootSeen = true
		if err != nil || res.Versions[0].Version < a.rootVer {
			a.rootVer--
			a.writeRoot(func(err error) {
				if err != nil {
					again()
				}
			})
			return
		}
		if res.Versions[0].Version == a.rootVer && !res.Forked() {
			return
		}
		var root *rootRecord
		for _, m := range res.Versions {
			if r, err := a.openRoot(m.Data); err == nil {
				if root == nil {
					root = r
				} else {
					root = mergeRoots(root, r)
				}
			}
		}
		if root == nil {
			x.env.Log.Warn("post: the network's root record is unreadable", "user", a.keys.Address)
			return
		}
		a.applyRoot(root, res.Versions[0].Version, res.Forked())
	})
}

// applyRoot settles the root record the mailbox was served from against
// a different one from the network (adoptRoot: newer is taken, branches
// merge), then matches folders by id: new ones are read from the
// network, renames and deletes applied.
func (a *Account) applyRoot(theirs *rootRecord, ver uint64, forked bool) {
	byID := map[[16]byte]*Folder{}
	for _, f := range a.folders {
		byID[f.info.ID] = f
	}
	a.adoptRoot(a.root, a.rootVer, theirs, ver, forked)
	root := a.root
	folders := map[string]*Folder{}
	for _, info := range root.Folders {
		f := byID[info.ID]
		delete(byID, info.ID)
		if f == nil {
			f = a.newFolder(info)
			f.loadNew()
		}
		f.info = info
		folders[info.Name] = f
	}
	for _, f := range byID {
		f.clear() // deleted elsewhere
	}
	a.folders = folders
	me := a.x.node.Cert.NodeID.ID
	if root.Writer != me {
		a.root.Writer = me
		a.writeRoot(func(err error) {
			if err != nil {
				a.x.env.Log.Warn("post: writing the merged root record", "user", a.keys.Address, "err", err)
			}
		})
	}
}

// servedName marks that this node has served the user's whole mailbox:
// only then do its local root, heads and cache describe every folder. A
// node whose first load failed half-way has a root record (it wrote
// itself in as the writer) but not the folders, and must read them from
// the network rather than serve them empty.
func (a *Account) servedName() string {
	return "post/served/" + hex.EncodeToString(a.cert.UserID.ID[:])
}

func (a *Account) served() bool {
	_, err := a.x.local.GetMeta(a.servedName())
	return err == nil
}

func (a *Account) markServed() {
	if a.served() {
		return
	}
	if err := a.x.local.SetMeta(a.servedName(), []byte{1}); err != nil {
		a.x.env.Log.Warn("post: noting the mailbox served", "user", a.keys.Address, "err", err)
	}
}
