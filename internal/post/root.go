package post

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"

	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// rootRecord is a user's root (DESIGN.md section 6): sealed with the log
// key inside a mutable object the user signs, it names
//   - the user's folders (name, id, UIDVALIDITY, subscription);
//   - the user's certificates: the SHA-256 of each certificate the user
//     has held, newest generation first. The current certificate itself
//     is published at CertKey (a mutable whose version is the key
//     generation), and every signed object carries its signer's, so the
//     root names them rather than holding them: it says which
//     certificates, current and retired, are the owner's own;
//   - the one node allowed to write the mailbox (a second or restored
//     node that loads it takes it over, and the first stops writing);
//   - the archive slot: where the user's Glacier archive chain ends.
type rootRecord struct {
	_       struct{} `cbor:",toarray"`
	Folders []folderInfo
	Writer  [16]byte // node id
	Archive ArchiveRoot
	Certs   []certRef
	// History names the root records this one was written on top of
	// (rootID), newest first, at most rootHistory: a reader tells a root
	// record that is behind another from one written on another branch.
	History [][32]byte
}

// rootHistory bounds History: a root record more than that many versions
// behind is taken for another branch and merged, which brings back
// nothing but folders deleted since.
const rootHistory = 32

// rootID names a root record's content.
func rootID(r *rootRecord) [32]byte { return sha256.Sum256(wire.MustMarshal(r)) }

// descends reports whether r is anc or was written on top of it.
func descends(r, anc *rootRecord) bool {
	id := rootID(anc)
	return rootID(r) == id || slices.Contains(r.History, id)
}

// adoptRoot settles the root record from what this node last wrote
// (mine, at version myVer; nil if nothing) and what the network holds
// (theirs, at theirVer, already merged if replicas hold several at that
// version). One written on top of the other is simply newer and is
// taken; two branches (the node wrote during a partition while another
// wrote on the other side) are merged, and the merge is written.
func (a *Account) adoptRoot(mine *rootRecord, myVer uint64, theirs *rootRecord, theirVer uint64, forked bool) {
	switch {
	case mine == nil || descends(theirs, mine):
		a.root, a.rootVer, a.rootID = theirs, theirVer, rootID(theirs)
		if forked {
			a.x.stats.ForksMerged++
			a.rootID = [32]byte{} // the merge names its parents itself
			a.writeRoot(func(error) {})
		}
	case descends(mine, theirs):
		// The network lags behind what this node wrote: ours holds, and
		// goes back.
		a.root, a.rootVer, a.rootID = mine, max(myVer, theirVer+1)-1, [32]byte{}
		if myVer > theirVer || rootID(mine) != rootID(theirs) {
			a.writeRoot(func(error) {})
		}
	default:
		a.x.stats.ForksMerged++
		a.root, a.rootVer, a.rootID = mergeRoots(mine, theirs), max(myVer, theirVer), [32]byte{}
		a.writeRoot(func(error) {})
	}
}

// folderInfo is one folder in the root record. NameSince and SubSince
// are the root versions that set the name and the subscription: where a
// forked root is merged, the later change of each wins.
type folderInfo struct {
	_            struct{} `cbor:",toarray"`
	Name         string
	ID           [16]byte
	UIDValidity  uint32
	Unsubscribed bool // IMAP UNSUBSCRIBE; folders start subscribed
	NameSince    uint64
	SubSince     uint64
}

// ArchiveRoot is the archive slot of the root record: the last sequence
// number of the user's archive chain and the hash of its manifest, as the
// archive (Glacier) reports them. Seq only grows; a zero value means no
// archive yet.
type ArchiveRoot struct {
	_        struct{} `cbor:",toarray"`
	Seq      uint64
	Manifest [32]byte
}

// certRef names one certificate the user has held.
type certRef struct {
	_          struct{} `cbor:",toarray"`
	Generation uint64   // the key generation it certifies
	Hash       [32]byte // SHA-256 of its bytes
}

// rootRecordV1 is the first root layout (no certificates, subscriptions
// or archive sequence); it still opens.
type rootRecordV1 struct {
	_       struct{} `cbor:",toarray"`
	Folders []folderInfoV1
	Writer  [16]byte
	Archive [32]byte
}

type folderInfoV1 struct {
	_           struct{} `cbor:",toarray"`
	Name        string
	ID          [16]byte
	UIDValidity uint32
}

func (a *Account) certRef() certRef {
	return certRef{Generation: a.keys.Generation(), Hash: sha256.Sum256(a.cert.Bytes())}
}

func (a *Account) openRoot(sealed []byte) (*rootRecord, error) {
	pt, err := OpenEntryAny(a.logKeys, sealed)
	if err != nil {
		return nil, err
	}
	return decodeRoot(pt)
}

func decodeRoot(pt []byte) (*rootRecord, error) {
	var r rootRecord
	err := wire.Unmarshal(pt, &r)
	if err == nil {
		return &r, nil
	}
	var old rootRecordV1
	if wire.Unmarshal(pt, &old) != nil {
		return nil, fmt.Errorf("%w: root record: %w", ErrTampered, err)
	}
	r = rootRecord{Writer: old.Writer}
	for _, f := range old.Folders {
		r.Folders = append(r.Folders, folderInfo{Name: f.Name, ID: f.ID, UIDValidity: f.UIDValidity})
	}
	return &r, nil
}

// mergeRoots merges two root records written at one version on two sides
// of a fork. It does not depend on the order of its arguments:
//   - folders: the union by id, so a folder deleted on one side only is
//     kept (no message lost); per folder the later rename (NameSince) and
//     the later (un)subscription (SubSince) win, a tie going to the
//     smaller name and to subscribed. Two folders that end up with one
//     name (each side created it): the smaller id keeps the name, the
//     other gets "~" and its id's first 4 bytes in hex appended;
//   - certificates: the union;
//   - archive: the higher Seq (then the higher manifest hash);
//   - writer: the higher node id (the node that loads the merged root
//     writes itself in anyway).
func mergeRoots(a, b *rootRecord) *rootRecord {
	out := &rootRecord{Writer: a.Writer, Archive: a.Archive}
	if bytes.Compare(b.Writer[:], a.Writer[:]) > 0 {
		out.Writer = b.Writer
	}
	if b.Archive.Seq > a.Archive.Seq || (b.Archive.Seq == a.Archive.Seq && bytes.Compare(b.Archive.Manifest[:], a.Archive.Manifest[:]) > 0) {
		out.Archive = b.Archive
	}
	byID := map[[16]byte]folderInfo{}
	for _, f := range a.Folders {
		byID[f.ID] = f
	}
	for _, g := range b.Folders {
		f, ok := byID[g.ID]
		if !ok {
			byID[g.ID] = g
			continue
		}
		if g.NameSince > f.NameSince || (g.NameSince == f.NameSince && g.Name < f.Name) {
			f.Name, f.NameSince = g.Name, g.NameSince
		}
		if g.SubSince > f.SubSince || (g.SubSince == f.SubSince && !g.Unsubscribed) {
			f.Unsubscribed, f.SubSince = g.Unsubscribed, g.SubSince
		}
		byID[g.ID] = f
	}
	for _, f := range byID {
		out.Folders = append(out.Folders, f)
	}
	sort.Slice(out.Folders, func(i, j int) bool {
		fi, fj := out.Folders[i], out.Folders[j]
		if fi.Name != fj.Name {
			return fi.Name < fj.Name
		}
		return bytes.Compare(fi.ID[:], fj.ID[:]) < 0
	})
	for i := 1; i < len(out.Folders); i++ {
		if out.Folders[i].Name == out.Folders[i-1].Name {
			out.Folders[i].Name += "~" + hex.EncodeToString(out.Folders[i].ID[:4])
		}
	}
	sort.Slice(out.Folders, func(i, j int) bool { return out.Folders[i].Name < out.Folders[j].Name })
	certs := slices.Concat(a.Certs, b.Certs)
	sort.Slice(certs, func(i, j int) bool {
		if certs[i].Generation != certs[j].Generation {
			return certs[i].Generation > certs[j].Generation
		}
		return bytes.Compare(certs[i].Hash[:], certs[j].Hash[:]) < 0
	})
	out.Certs = slices.Compact(certs)
	// Both records are the merge's parents: either is behind it.
	ia, ib := rootID(a), rootID(b)
	if bytes.Compare(ia[:], ib[:]) > 0 {
		ia, ib = ib, ia
	}
	hist := [][32]byte{ia, ib}
	for i := range max(len(a.History), len(b.History)) {
		var pair [][32]byte
		if i < len(a.History) {
			pair = append(pair, a.History[i])
		}
		if i < len(b.History) {
			pair = append(pair, b.History[i])
		}
		sort.Slice(pair, func(x, y int) bool { return bytes.Compare(pair[x][:], pair[y][:]) < 0 })
		for _, h := range pair {
			if !slices.Contains(hist, h) {
				hist = append(hist, h)
			}
		}
	}
	out.History = hist[:min(len(hist), rootHistory)]
	return out
}

// noteCert adds the account's certificate to the root record if it is
// not there yet (a new user, or the first load after a key rotation);
// the earlier ones stay, as retired.
func (a *Account) noteCert() bool {
	ref := a.certRef()
	if slices.Contains(a.root.Certs, ref) {
		return false
	}
	a.root.Certs = append([]certRef{ref}, a.root.Certs...)
	sort.SliceStable(a.root.Certs, func(i, j int) bool { return a.root.Certs[i].Generation > a.root.Certs[j].Generation })
	return true
}

// ArchiveRoot is the archive slot of the root record as this node knows
// it.
func (a *Account) ArchiveRoot() ArchiveRoot {
	if a.root == nil {
		return ArchiveRoot{}
	}
	return a.root.Archive
}

// RootKey is where a user's root record is stored (a mutable object).
func RootKey(user id.UserID) object.Key { return past.MutableKey(user, "root") }

// OpenArchiveRoot reads the archive slot of a root record (the Data of
// the mutable object at RootKey) with the user's keys: recovery from the
// archive uses it as the position the chain reaches at least.
func OpenArchiveRoot(keys identity.UserKeys, sealed []byte) (ArchiveRoot, error) {
	pt, err := OpenEntryAny(DeriveLogKeys(keys), sealed)
	if err != nil {
		return ArchiveRoot{}, err
	}
	r, err := decodeRoot(pt)
	if err != nil {
		return ArchiveRoot{}, err
	}
	return r.Archive, nil
}

// SetArchiveRoot records where the user's archive chain ends: the
// archive calls it once the chain's entry numbered r.Seq, whose manifest
// hashes to r.Manifest, is durable. A value not newer (by Seq) than the
// one recorded changes nothing. done runs once the root record is stored
// (or at once when nothing changes); before the mailbox is loaded it
// fails with ErrNotReady.
func (a *Account) SetArchiveRoot(r ArchiveRoot, done func(error)) {
	if !a.ready || a.root == nil {
		a.x.env.Clock.AfterFunc(0, func() { done(ErrNotReady) })
		return
	}
	if r.Seq <= a.root.Archive.Seq {
		a.x.env.Clock.AfterFunc(0, func() { done(nil) })
		return
	}
	a.root.Archive = r
	a.writeRoot(done)
}

// Subscribed reports whether the folder called name is subscribed (IMAP
// SUBSCRIBE, RFC 9051 section 6.3.7). Folders start subscribed.
func (a *Account) Subscribed(name string) bool {
	if a.root == nil {
		return false
	}
	for _, f := range a.root.Folders {
		if f.Name == name {
			return !f.Unsubscribed
		}
	}
	return false
}

// Subscriptions lists the subscribed folders, sorted (IMAP LSUB).
func (a *Account) Subscriptions() []string {
	var out []string
	if a.root == nil {
		return out
	}
	for _, f := range a.root.Folders {
		if !f.Unsubscribed {
			out = append(out, f.Name)
		}
	}
	sort.Strings(out)
	return out
}

// SetSubscribed subscribes to (on) or unsubscribes from the folder
// called name; the subscription is kept in the root record, so it
// survives restarts and moves to whichever node serves the user. Only
// existing folders can be subscribed; deleting a folder drops its
// subscription.
func (a *Account) SetSubscribed(name string, on bool, done func(error)) {
	if !a.ready || a.root == nil {
		a.x.env.Clock.AfterFunc(0, func() { done(ErrNotReady) })
		return
	}
	for i := range a.root.Folders {
		f := &a.root.Folders[i]
		if f.Name != name {
			continue
		}
		if f.Unsubscribed == !on {
			a.x.env.Clock.AfterFunc(0, func() { done(nil) })
			return
		}
		f.Unsubscribed, f.SubSince = !on, a.rootVer+1
		a.writeRoot(done)
		return
	}
	a.x.env.Clock.AfterFunc(0, func() { done(fmt.Errorf("%w: %q", ErrNoFolder, name)) })
}
