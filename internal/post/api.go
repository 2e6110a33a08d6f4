package post

import (
	"fmt"
	"slices"

	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/store/object"
)

// This file is the API the mail front-end (IMAP, SMTP) uses. Every method
// runs on the node's event loop; reads answer from memory at once, writes
// call done once the change is durable in the network.

// Folders lists the account's folder names, sorted.
func (a *Account) Folders() []string { return sortedNames(a.folders) }

// Folder returns the folder called name.
func (a *Account) Folder(name string) (*Folder, bool) {
	f, ok := a.folders[name]
	return f, ok
}

// CreateFolder adds an empty folder.
func (a *Account) CreateFolder(name string, done func(error)) {
	if !a.ready {
		a.x.env.Clock.AfterFunc(0, func() { done(ErrNotReady) })
		return
	}
	if _, ok := a.folders[name]; ok || name == "" {
		a.x.env.Clock.AfterFunc(0, func() { done(fmt.Errorf("%w: %q", ErrFolderExists, name)) })
		return
	}
	info := a.newFolderInfo(name)
	a.root.Folders = append(a.root.Folders, info)
	a.folders[name] = a.newFolder(info)
	a.writeRoot(done)
}

// DeleteFolder removes a folder from the mailbox (INBOX cannot be
// deleted). Its messages stay in the network until their leases run out.
func (a *Account) DeleteFolder(name string, done func(error)) {
	if _, ok := a.folders[name]; !ok || name == "INBOX" {
		a.x.env.Clock.AfterFunc(0, func() { done(fmt.Errorf("%w: %q", ErrNoFolder, name)) })
		return
	}
	a.folders[name].clear()
	a.folders[name].dropCache()
	delete(a.folders, name)
	a.root.Folders = slices.DeleteFunc(a.root.Folders, func(f folderInfo) bool { return f.Name == name })
	a.writeRoot(done)
}

// RenameFolder renames a folder; its log and UIDs are unchanged.
func (a *Account) RenameFolder(from, to string, done func(error)) {
	f, ok := a.folders[from]
	if !ok || from == "INBOX" {
		a.x.env.Clock.AfterFunc(0, func() { done(fmt.Errorf("%w: %q", ErrNoFolder, from)) })
		return
	}
	if _, taken := a.folders[to]; taken || to == "" {
		a.x.env.Clock.AfterFunc(0, func() { done(fmt.Errorf("%w: %q", ErrFolderExists, to)) })
		return
	}
	delete(a.folders, from)
	f.info.Name = to
	a.folders[to] = f
	for i := range a.root.Folders {
		if a.root.Folders[i].Name == from {
			// The version this write gets: a merge keeps the later name.
			a.root.Folders[i].Name, a.root.Folders[i].NameSince = to, a.rootVer+1
		}
	}
	a.writeRoot(done)
}

// Append stores a message the client uploads (IMAP APPEND: drafts, sent
// copies) and adds it to the folder; done gets its UID. Beyond the
// user's quota it fails with ErrOverQuota.
func (f *Folder) Append(msg []byte, flags []string, date int64, done func(uint32, error)) {
	x := f.a.x
	if err := f.a.CheckQuota(int64(len(msg))); err != nil {
		x.env.Clock.AfterFunc(0, func() { done(0, err) })
		return
	}
	key, err := NewContentKey(randReader{x.env.Rand})
	if err != nil {
		x.env.Clock.AfterFunc(0, func() { done(0, err) })
		return
	}
	chunks, ref := SealBody(key, msg, x.cfg.ChunkSize)
	var id [16]byte
	x.env.Rand.Read(id[:])
	n := len(chunks)
	var firstErr error
	for _, c := range chunks {
		store(x.past, c, x.cfg.MailLease, func(err error) {
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if err == nil {
				f.a.archive(object.KindImmutable, object.ImmutableKey(c), c)
			}
			if n--; n > 0 {
				return
			}
			if firstErr != nil {
				done(0, firstErr)
				return
			}
			uid := f.reserved
			f.reserved++
			m := &Message{UID: uid, ID: id, Body: ref, Date: date, Flags: editFlags(nil, flags, true)}
			f.enqueue(Op{Kind: OpAppend, UID: uid, Msg: m}, func(err error) {
				if err != nil {
					done(0, err)
					return
				}
				done(m.UID, nil) // a reload may have moved it
			})
		})
	}
}

// Fetch reads a message's bytes from the network, verified and decrypted.
func (f *Folder) Fetch(uid uint32, done func([]byte, error)) {
	m, ok := f.msgs[uid]
	if !ok {
		f.a.x.env.Clock.AfterFunc(0, func() { done(nil, fmt.Errorf("post: %s: no UID %d", f.info.Name, uid)) })
		return
	}
	FetchBody(f.a.x, m.Body, done)
}

// FetchBody reads and opens a body.
func FetchBody(x *Post, ref BodyRef, done func([]byte, error)) {
	fetchBody(x, ref, func(b []byte, _ [][]byte, err error) { done(b, err) })
}

// fetchBody reads and opens a body, and hands over its sealed chunks too.
func fetchBody(x *Post, ref BodyRef, done func([]byte, [][]byte, error)) {
	chunks := make([][]byte, len(ref.Chunks))
	n := len(ref.Chunks)
	if n == 0 {
		b, err := OpenBody(ref, nil)
		x.env.Clock.AfterFunc(0, func() { done(b, nil, err) })
		return
	}
	var firstErr error
	for i, k := range ref.Chunks {
		x.past.Lookup(object.Key(k), func(b []byte, err error) {
			if err != nil && firstErr == nil {
				firstErr = err
			}
			chunks[i] = b
			if n--; n > 0 {
				return
			}
			if firstErr != nil {
				done(nil, nil, firstErr)
				return
			}
			body, err := OpenBody(ref, chunks)
			done(body, chunks, err)
		})
	}
}

// SetFlags adds or removes flags on messages.
func (f *Folder) SetFlags(uids []uint32, flags []string, add bool, done func(error)) {
	f.batch(uids, func(uid uint32) Op { return Op{Kind: OpFlags, UID: uid, Flags: flags, Add: add} }, done)
}

// Expunge removes messages from the folder.
func (f *Folder) Expunge(uids []uint32, done func(error)) {
	f.batch(uids, func(uid uint32) Op { return Op{Kind: OpExpunge, UID: uid} }, done)
}

// Copy adds the messages to dst with new UIDs (the bodies are shared, not
// stored again); done gets the new UIDs in order.
func (f *Folder) Copy(uids []uint32, dst *Folder, done func([]uint32, error)) {
	var out []uint32
	var ops []Op
	for _, uid := range uids {
		m, ok := f.msgs[uid]
		if !ok {
			continue
		}
		c := *m
		c.UID = dst.reserved
		dst.reserved++
		out = append(out, c.UID)
		ops = append(ops, Op{Kind: OpAppend, UID: c.UID, Msg: &c})
	}
	dst.enqueueAll(ops, func(err error) { done(out, err) })
}

// Move is Copy, then Expunge from this folder once the copy is durable.
func (f *Folder) Move(uids []uint32, dst *Folder, done func([]uint32, error)) {
	f.Copy(uids, dst, func(out []uint32, err error) {
		if err != nil {
			done(nil, err)
			return
		}
		f.Expunge(uids, func(err error) { done(out, err) })
	})
}

func (f *Folder) batch(uids []uint32, mk func(uint32) Op, done func(error)) {
	var ops []Op
	for _, uid := range uids {
		if _, ok := f.msgs[uid]; ok {
			ops = append(ops, mk(uid))
		}
	}
	f.enqueueAll(ops, done)
}

func (f *Folder) enqueueAll(ops []Op, done func(error)) {
	if len(ops) == 0 {
		f.a.x.env.Clock.AfterFunc(0, func() { done(nil) })
		return
	}
	n := len(ops)
	var firstErr error
	for _, op := range ops {
		f.enqueue(op, func(err error) {
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if n--; n == 0 {
				done(firstErr)
			}
		})
	}
}

// PublishKeyBackup stores the user's sealed key backup (from
// identity.SealBackup) in the network, signed by the user, so that losing
// the node loses nothing: the address and the recovery code are enough to
// get the keys back, and with them the whole mailbox.
func (a *Account) PublishKeyBackup(backup []byte, done func(error)) {
	// A rotation's backup (all the key pairs) replaces the one before.
	m, err := past.SignMutable(a.keys, a.cert, "keybackup", a.keys.Generation(), backup)
	if err != nil {
		a.x.env.Clock.AfterFunc(0, func() { done(err) })
		return
	}
	a.x.past.InsertMutable(m, a.x.cfg.MailLease, func(_ past.InsertResult, err error) {
		if err == nil {
			a.archiveMutable(m)
		}
		done(err)
	})
}

// FetchKeyBackup reads a user's key backup from the network: the highest
// version any replica holds whose signature and certificate (for that
// address, from this community's CA) check out.
func (x *Post) FetchKeyBackup(address string, done func([]byte, error)) {
	addr, err := identity.CanonicalAddress(address)
	if err != nil {
		x.env.Clock.AfterFunc(0, func() { done(nil, err) })
		return
	}
	x.past.LookupMutable(past.MutableKey(id.ForUser(addr), "keybackup"), func(res past.MutableResult, err error) {
		if err != nil {
			done(nil, err)
			return
		}
		for _, m := range res.Versions {
			if m.Address == addr {
				done(m.Data, nil)
				return
			}
		}
		done(nil, fmt.Errorf("%w: key backup of %s", ErrNoUser, addr))
	})
}

// AppendStored adds a message whose body is already stored (a copy from
// elsewhere, a gateway's delivery) to the folder; done gets its UID.
func (f *Folder) AppendStored(ref BodyRef, flags []string, date int64, done func(uint32, error)) {
	var id [16]byte
	f.a.x.env.Rand.Read(id[:])
	uid := f.reserved
	f.reserved++
	m := &Message{UID: uid, ID: id, Body: ref, Date: date, Flags: editFlags(nil, flags, true)}
	f.enqueue(Op{Kind: OpAppend, UID: uid, Msg: m}, func(err error) {
		if err != nil {
			done(0, err)
			return
		}
		done(m.UID, nil)
	})
}

// Usage is the user's mail in bytes, approximately: the plaintext size of
// each distinct message body in the user's folders, a copy in a second
// folder counted once. Folder logs, and messages being appended, are not
// counted. It is kept up to date as folders change, so asking is cheap.
func (a *Account) Usage() int64 { return a.usage }

// count adds (d = 1) or removes (d = -1) one reference to m's body; the
// body counts in the usage while it has references.
func (a *Account) count(m *Message, d int) {
	if len(m.Body.Chunks) == 0 {
		return
	}
	k := m.Body.Chunks[0]
	n := a.bodies[k] + d
	switch {
	case n < 0:
		return // not counted in: nothing to take away
	case n == 0:
		delete(a.bodies, k)
		a.usage -= m.Body.Size
	case n == 1 && d > 0:
		a.usage += m.Body.Size
	}
	if n > 0 {
		a.bodies[k] = n
	}
}

// Quota is the user's quota in bytes, 0 for none.
func (a *Account) Quota() int64 { return a.x.cfg.Quota }

// CheckQuota reports ErrOverQuota if adding size bytes would take the
// user past the quota.
func (a *Account) CheckQuota(size int64) error {
	q := a.Quota()
	if q <= 0 {
		return nil
	}
	if u := a.Usage(); u+size > q {
		return fmt.Errorf("%w: %s uses %d of %d bytes, %d more do not fit", ErrOverQuota, a.keys.Address, u, q, size)
	}
	return nil
}

// CheckQuota is Account.CheckQuota for a recipient this node serves (the
// SMTP server asks it at RCPT); a recipient served elsewhere is not
// checked here, and nil is returned.
func (x *Post) CheckQuota(addr string, size int64) error {
	if a := x.users[addr]; a != nil {
		return a.CheckQuota(size)
	}
	return nil
}
