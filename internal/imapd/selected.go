package imapd

import (
	"bufio"
	"bytes"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"

	"github.com/epost-mail/epost/internal/post"
)

// fetchBatch is how many message bodies one command asks POST for at a
// time: enough to keep the network busy, few enough to bound memory.
const fetchBatch = 16

// metaBatch is how many messages' metadata (flags, dates, sizes) one turn
// of the event loop copies out for a command.
const metaBatch = 1024

var (
	errNotSelected = &imap.Error{Type: imap.StatusResponseTypeBad, Text: "No mailbox selected"}
	errReadOnly    = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Mailbox is read-only (EXAMINE)"}
)

// item is one message as the client numbers it.
type item struct {
	seq, uid uint32
}

// loaded is a message read from POST for a command.
type loaded struct {
	item
	ok   bool // still in the folder
	msg  post.Message
	body []byte // only when the command needs the bytes
}

// expungeWriter is what EXPUNGE, MOVE and unsolicited updates write to.
type expungeWriter interface {
	WriteExpunge(seqNum uint32) error
}

// exists reports whether f is still one of the user's folders (it may
// have been deleted since it was selected). On the loop.
func (ss *session) exists(p *post.Post, f *post.Folder) bool {
	a, err := ss.account(p)
	if err != nil {
		return false
	}
	g, ok := a.Folder(f.Name())
	return ok && g == f
}

// Select opens a folder, read-write or (EXAMINE) read-only (RFC 9051
// sections 6.3.2 and 6.3.3).
func (ss *session) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.unselectLocked()
	readOnly := options != nil && options.ReadOnly
	// Drop a wake-up meant for the folder selected before; one that comes
	// after the snapshot below is kept.
	select {
	case <-ss.notify:
	default:
	}
	var sel *selected
	var data *imap.SelectData
	err := ss.s.do(func(p *post.Post) error {
		f, err := ss.folder(p, name)
		if err != nil {
			return err
		}
		msgs := f.Messages()
		sel = &selected{f: f, readOnly: readOnly, uids: make([]uint32, 0, len(msgs)), flags: make(map[uint32][]imap.Flag, len(msgs))}
		keywords := map[string]bool{}
		var firstUnseen uint32
		for i, m := range msgs {
			sel.uids = append(sel.uids, m.UID)
			sel.flags[m.UID] = imapFlags(m.Flags)
			for _, fl := range m.Flags {
				if !strings.HasPrefix(fl, `\`) {
					keywords[fl] = true
				}
			}
			if firstUnseen == 0 && !slices.Contains(m.Flags, string(imap.FlagSeen)) {
				firstUnseen = uint32(i + 1)
			}
		}
		flags := slices.Clone(systemFlags)
		for _, k := range sortedKeys(keywords) {
			flags = append(flags, imap.Flag(k))
		}
		perm := []imap.Flag{}
		if !readOnly {
			perm = append(slices.Clone(flags), imap.FlagWildcard)
		}
		data = &imap.SelectData{
			Flags:             flags,
			PermanentFlags:    perm,
			NumMessages:       uint32(len(msgs)),
			FirstUnseenSeqNum: firstUnseen,
			UIDNext:           imap.UID(f.UIDNext()),
			UIDValidity:       f.UIDValidity(),
		}
		ss.s.subscribe(f, ss)
		return nil
	})
	if err != nil {
		return nil, err
	}
	ss.sel = sel
	return data, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Unselect closes the folder without expunging (RFC 3691).
func (ss *session) Unselect() error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.unselectLocked()
	return nil
}

// Poll tells the client what changed in the selected folder since it
// last heard: EXPUNGE (only where allowed), EXISTS, and FETCH FLAGS (RFC
// 9051 section 7.5).
func (ss *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.pollLocked(w, allowExpunge)
}

type flagChange struct {
	uid   uint32
	flags []imap.Flag
}

func (ss *session) pollLocked(w *imapserver.UpdateWriter, allowExpunge bool) error {
	sel := ss.sel
	if sel == nil {
		return nil
	}
	var gone []int
	var added []flagChange
	var changed []flagChange
	err := ss.s.do(func(p *post.Post) error {
		if !ss.exists(p, sel.f) {
			return nil
		}
		for i, uid := range sel.uids {
			m, ok := sel.f.Get(uid)
			if !ok {
				gone = append(gone, i)
				continue
			}
			if !sameFlags(sel.flags[uid], m.Flags) {
				changed = append(changed, flagChange{uid, imapFlags(m.Flags)})
			}
		}
		var last uint32
		if n := len(sel.uids); n > 0 {
			last = sel.uids[n-1]
		}
		// New messages get UIDs above every one the client knows
		// (RFC 9051 section 2.3.1.1).
		for uid := last + 1; uid < sel.f.UIDNext(); uid++ {
			if m, ok := sel.f.Get(uid); ok {
				added = append(added, flagChange{uid, imapFlags(m.Flags)})
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if allowExpunge && len(gone) > 0 {
		for j := len(gone) - 1; j >= 0; j-- {
			i := gone[j]
			delete(sel.flags, sel.uids[i])
			sel.uids = slices.Delete(sel.uids, i, i+1)
			if err := w.WriteExpunge(uint32(i + 1)); err != nil {
				return err
			}
		}
	}
	if len(added) > 0 {
		for _, a := range added {
			sel.uids = append(sel.uids, a.uid)
			sel.flags[a.uid] = a.flags
		}
		if err := w.WriteNumMessages(uint32(len(sel.uids))); err != nil {
			return err
		}
	}
	for _, c := range changed {
		i, ok := slices.BinarySearch(sel.uids, c.uid)
		if !ok {
			continue
		}
		sel.flags[c.uid] = c.flags
		if err := w.WriteMessageFlags(uint32(i+1), imap.UID(c.uid), c.flags); err != nil {
			return err
		}
	}
	return nil
}

// Idle pushes updates as POST reports changes to the folder (RFC 2177),
// until the client says DONE.
func (ss *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	if err := ss.Poll(w, true); err != nil {
		return err
	}
	for {
		select {
		case <-stop:
			return nil
		case <-ss.notify:
			if err := ss.Poll(w, true); err != nil {
				return err
			}
		}
	}
}

// resolve turns a sequence or UID set into the messages the client means,
// in sequence order.
func (sel *selected) resolve(numSet imap.NumSet) []item {
	if imap.IsSearchRes(numSet) {
		numSet = sel.searchRes
	}
	var out []item
	switch set := numSet.(type) {
	case imap.SeqSet:
		set = staticSeqSet(set, uint32(len(sel.uids)))
		for i, uid := range sel.uids {
			if set.Contains(uint32(i + 1)) {
				out = append(out, item{uint32(i + 1), uid})
			}
		}
	case imap.UIDSet:
		set = staticUIDSet(set, sel.lastUID())
		for i, uid := range sel.uids {
			if set.Contains(imap.UID(uid)) {
				out = append(out, item{uint32(i + 1), uid})
			}
		}
	}
	return out
}

func (sel *selected) lastUID() uint32 {
	if n := len(sel.uids); n > 0 {
		return sel.uids[n-1]
	}
	return 0
}

// staticSeqSet replaces "*" (0 in go-imap) with the largest number
// (RFC 9051 section 9, seq-number), on a copy.
func staticSeqSet(set imap.SeqSet, max uint32) imap.SeqSet {
	out := slices.Clone(set)
	for i := range out {
		staticRange(&out[i].Start, &out[i].Stop, max)
	}
	return out
}

func staticUIDSet(set imap.UIDSet, max uint32) imap.UIDSet {
	out := slices.Clone(set)
	for i := range out {
		staticRange((*uint32)(&out[i].Start), (*uint32)(&out[i].Stop), max)
	}
	return out
}

func staticRange(start, stop *uint32, max uint32) {
	dyn := false
	if *start == 0 {
		*start, dyn = max, true
	}
	if *stop == 0 {
		*stop, dyn = max, true
	}
	if dyn && *start > *stop {
		*start, *stop = *stop, *start
	}
}

// load reads messages from POST: metadata always, the bytes (fetched
// from the network, fetchBatch at a time) when needBody.
func (ss *session) load(sel *selected, items []item, needBody bool) ([]loaded, error) {
	out := make([]loaded, len(items))
	batch := len(items)
	if needBody {
		batch = fetchBatch
	}
	for start := 0; start < len(items); start += batch {
		part := out[start:min(start+batch, len(items))]
		errs := make(chan error, len(part))
		pending := 0
		err := ss.s.do(func(p *post.Post) error {
			if !ss.exists(p, sel.f) {
				return errGone
			}
			for i := range part {
				part[i].item = items[start+i]
				m, ok := sel.f.Get(part[i].uid)
				if !ok {
					continue
				}
				part[i].ok = true
				part[i].msg = *m
				part[i].msg.Flags = slices.Clone(m.Flags)
				if needBody {
					pending++
					l := &part[i]
					sel.f.Fetch(l.uid, func(b []byte, err error) {
						l.body = b
						errs <- err
					})
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if pending == 0 {
			continue
		}
		t := time.NewTimer(ss.s.cfg.Timeout)
		var firstErr error
		for ; pending > 0; pending-- {
			select {
			case err := <-errs:
				if err != nil && firstErr == nil {
					firstErr = err
				}
			case <-t.C:
				return nil, errUnavailable
			case <-ss.s.done:
				return nil, errUnavailable
			}
		}
		t.Stop()
		if firstErr != nil {
			return nil, ss.s.storeError(firstErr)
		}
	}
	return out, nil
}

// Fetch answers FETCH and UID FETCH (RFC 9051 section 6.4.5): metadata
// from the folder log, everything else from the message bytes POST
// fetches, cut up by go-imap's extractors.
func (ss *session) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	sel := ss.sel
	if sel == nil {
		return errNotSelected
	}
	items := sel.resolve(numSet)
	needBody := options.Envelope || options.BodyStructure != nil ||
		len(options.BodySection)+len(options.BinarySection)+len(options.BinarySectionSize) > 0
	markSeen := false
	if !sel.readOnly {
		for _, bs := range options.BodySection {
			markSeen = markSeen || !bs.Peek
		}
		for _, bs := range options.BinarySection {
			markSeen = markSeen || !bs.Peek
		}
	}
	if markSeen {
		// BODY[...] without PEEK sets \Seen; the FETCH response then
		// carries the new flags.
		err := ss.s.call(func(p *post.Post, done func(error)) error {
			if !ss.exists(p, sel.f) {
				return errGone
			}
			var uids []uint32
			for _, it := range items {
				if m, ok := sel.f.Get(it.uid); ok && !slices.Contains(m.Flags, string(imap.FlagSeen)) {
					uids = append(uids, it.uid)
				}
			}
			if len(uids) == 0 {
				done(nil)
				return nil
			}
			sel.f.SetFlags(uids, []string{string(imap.FlagSeen)}, true, done)
			return nil
		})
		if err != nil {
			return err
		}
	}
	// Without bytes, metadata comes in larger slices: each is one turn of
	// the event loop.
	batch := metaBatch
	if needBody {
		batch = fetchBatch
	}
	for start := 0; start < len(items); start += batch {
		part, err := ss.load(sel, items[start:min(start+batch, len(items))], needBody)
		if err != nil {
			return err
		}
		for i := range part {
			l := &part[i]
			if !l.ok {
				continue // expunged meanwhile; the client hears at the next EXPUNGE point
			}
			withFlags := options.Flags || markSeen
			if err := writeFetch(w.CreateMessage(l.seq), l, options, withFlags); err != nil {
				return err
			}
			if withFlags {
				sel.flags[l.uid] = imapFlags(l.msg.Flags)
			}
		}
	}
	return nil
}

func writeFetch(rw *imapserver.FetchResponseWriter, l *loaded, options *imap.FetchOptions, withFlags bool) error {
	rw.WriteUID(imap.UID(l.uid))
	if withFlags {
		rw.WriteFlags(imapFlags(l.msg.Flags))
	}
	if options.InternalDate {
		rw.WriteInternalDate(time.UnixMicro(l.msg.Date))
	}
	if options.RFC822Size {
		size := l.msg.Body.Size
		if l.body != nil {
			size = int64(len(l.body))
		}
		rw.WriteRFC822Size(size)
	}
	if options.Envelope {
		rw.WriteEnvelope(envelope(l.body))
	}
	var view []byte // the MIME structure's view of the bytes, when needed
	parts := func() []byte {
		if view == nil {
			view = mimeView(l.body)
		}
		return view
	}
	if options.BodyStructure != nil {
		rw.WriteBodyStructure(validBodyStructure(imapserver.ExtractBodyStructure(bytes.NewReader(parts()))))
	}
	for _, bs := range options.BodySection {
		var buf []byte
		if len(bs.Part) > 0 {
			buf = bodySection(parts(), bs)
		} else {
			buf = bodySection(l.body, bs)
		}
		if err := writeLiteral(rw.WriteBodySection(bs, int64(len(buf))), buf); err != nil {
			return err
		}
	}
	for _, bs := range options.BinarySection {
		buf := imapserver.ExtractBinarySection(bytes.NewReader(parts()), bs)
		if err := writeLiteral(rw.WriteBinarySection(bs, int64(len(buf))), buf); err != nil {
			return err
		}
	}
	for _, bss := range options.BinarySectionSize {
		rw.WriteBinarySectionSize(bss, imapserver.ExtractBinarySectionSize(bytes.NewReader(parts()), bss))
	}
	return rw.Close()
}

func writeLiteral(wc interface {
	Write([]byte) (int, error)
	Close() error
}, buf []byte) error {
	_, werr := wc.Write(buf)
	cerr := wc.Close()
	if werr != nil {
		return werr
	}
	return cerr
}

// bodySection returns a BODY[...] item. The whole message, its header
// and its text are served as stored, byte for byte (RFC 9051 section
// 6.4.5: BODY[] is the exact message); parts and header-field lists are
// cut out by go-imap's extractor, which parses the MIME structure.
func bodySection(msg []byte, item *imap.FetchItemBodySection) []byte {
	if len(item.Part) > 0 || len(item.HeaderFields) > 0 || len(item.HeaderFieldsNot) > 0 {
		return imapserver.ExtractBodySection(bytes.NewReader(msg), item)
	}
	header, text := splitHeader(msg)
	switch item.Specifier {
	case imap.PartSpecifierNone:
		return partial(msg, item.Partial)
	case imap.PartSpecifierHeader:
		return partial(header, item.Partial)
	case imap.PartSpecifierText:
		return partial(text, item.Partial)
	}
	return imapserver.ExtractBodySection(bytes.NewReader(msg), item)
}

// splitHeader splits a message after the empty line that ends its header
// (RFC 5322 section 2.1); without one, all of it is header.
func splitHeader(msg []byte) (header, text []byte) {
	for i := 0; i < len(msg); {
		j := bytes.IndexByte(msg[i:], '\n')
		if j < 0 {
			break
		}
		line := msg[i : i+j+1]
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			return msg[:i+j+1], msg[i+j+1:]
		}
		i += j + 1
	}
	return msg, nil
}

// partial cuts <offset.size> out of b (RFC 9051 section 6.4.5).
func partial(b []byte, p *imap.SectionPartial) []byte {
	if p == nil {
		return b
	}
	if p.Offset >= int64(len(b)) {
		return []byte{}
	}
	b = b[p.Offset:]
	if p.Size >= 0 && p.Size < int64(len(b)) {
		b = b[:p.Size]
	}
	return b
}

// validBodyStructure mends what go-imap extracts from broken MIME so that
// it can be written: a multipart must have at least one part (RFC 9051
// section 9, body-type-mpart), so a multipart whose parts did not parse
// gets one empty text part.
func validBodyStructure(bs imap.BodyStructure) imap.BodyStructure {
	switch b := bs.(type) {
	case *imap.BodyStructureMultiPart:
		for i, c := range b.Children {
			b.Children[i] = validBodyStructure(c)
		}
		if len(b.Children) == 0 {
			b.Children = []imap.BodyStructure{&imap.BodyStructureSinglePart{Type: "text", Subtype: "plain",
				Text: &imap.BodyStructureText{}, Extended: &imap.BodyStructureSinglePartExt{}}}
		}
	case *imap.BodyStructureSinglePart:
		if b.MessageRFC822 != nil && b.MessageRFC822.BodyStructure != nil {
			b.MessageRFC822.BodyStructure = validBodyStructure(b.MessageRFC822.BodyStructure)
		}
	}
	return bs
}

// envelope parses the header for ENVELOPE; an unparsable header gives an
// empty envelope, not an error (the message is what it is).
func envelope(msg []byte) *imap.Envelope {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg)))
	if err != nil {
		return &imap.Envelope{}
	}
	if env := imapserver.ExtractEnvelope(h); env != nil {
		return env
	}
	return &imap.Envelope{}
}

// Store changes flags (RFC 9051 section 6.4.6) and answers with the flags
// now held, once the change is durable.
func (ss *session) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	sel := ss.sel
	if sel == nil {
		return errNotSelected
	}
	if sel.readOnly {
		return errReadOnly
	}
	items := sel.resolve(numSet)
	change := postFlags(flags.Flags)
	err := ss.s.call(func(p *post.Post, done func(error)) error {
		if !ss.exists(p, sel.f) {
			return errGone
		}
		var uids []uint32
		for _, it := range items {
			if _, ok := sel.f.Get(it.uid); ok {
				uids = append(uids, it.uid)
			}
		}
		if len(uids) == 0 {
			done(nil)
			return nil
		}
		switch flags.Op {
		case imap.StoreFlagsAdd, imap.StoreFlagsDel:
			if len(change) == 0 {
				done(nil)
				return nil
			}
			sel.f.SetFlags(uids, change, flags.Op == imap.StoreFlagsAdd, done)
		case imap.StoreFlagsSet:
			// Replace: add the new set, and remove, flag by flag, what
			// each message holds beyond it.
			remove := map[string][]uint32{}
			for _, uid := range uids {
				m, _ := sel.f.Get(uid)
				for _, fl := range m.Flags {
					if !slices.Contains(change, fl) {
						remove[fl] = append(remove[fl], uid)
					}
				}
			}
			n := 1 + len(remove)
			var firstErr error
			one := func(err error) {
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if n--; n == 0 {
					done(firstErr)
				}
			}
			if len(change) > 0 {
				sel.f.SetFlags(uids, change, true, one)
			} else {
				one(nil)
			}
			for _, fl := range sortedKeys(setOf(remove)) {
				sel.f.SetFlags(remove[fl], []string{fl}, false, one)
			}
		default:
			return &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Unknown STORE operation"}
		}
		return nil
	})
	if err != nil {
		return err
	}
	part, err := ss.load(sel, items, false)
	if err != nil {
		return err
	}
	for i := range part {
		l := &part[i]
		if !l.ok {
			continue
		}
		sel.flags[l.uid] = imapFlags(l.msg.Flags)
		if flags.Silent {
			continue
		}
		rw := w.CreateMessage(l.seq)
		rw.WriteUID(imap.UID(l.uid))
		rw.WriteFlags(imapFlags(l.msg.Flags))
		if err := rw.Close(); err != nil {
			return err
		}
	}
	return nil
}

func setOf[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// Expunge removes the messages marked \Deleted (RFC 9051 section 6.4.3),
// only those in uids for UID EXPUNGE (RFC 4315 section 2.1).
func (ss *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	sel := ss.sel
	if sel == nil {
		return errNotSelected
	}
	if sel.readOnly {
		return errReadOnly
	}
	var only imap.UIDSet
	if uids != nil {
		only = staticUIDSet(*uids, sel.lastUID())
	}
	var del []uint32
	err := ss.s.call(func(p *post.Post, done func(error)) error {
		if !ss.exists(p, sel.f) {
			return errGone
		}
		for _, uid := range sel.uids {
			if uids != nil && !only.Contains(imap.UID(uid)) {
				continue
			}
			if m, ok := sel.f.Get(uid); ok && slices.Contains(m.Flags, string(imap.FlagDeleted)) {
				del = append(del, uid)
			}
		}
		if len(del) == 0 {
			done(nil)
			return nil
		}
		sel.f.Expunge(del, done)
		return nil
	})
	if err != nil {
		return err
	}
	return sel.forget(w, del)
}

// forget drops messages from the client's view, telling it, highest
// sequence number first so that each number is right when it is sent.
func (sel *selected) forget(w expungeWriter, uids []uint32) error {
	gone := map[uint32]bool{}
	for _, u := range uids {
		gone[u] = true
	}
	for i := len(sel.uids) - 1; i >= 0; i-- {
		uid := sel.uids[i]
		if !gone[uid] {
			continue
		}
		sel.uids = slices.Delete(sel.uids, i, i+1)
		delete(sel.flags, uid)
		if err := w.WriteExpunge(uint32(i + 1)); err != nil {
			return err
		}
	}
	return nil
}

// Copy copies messages to another folder (RFC 9051 section 6.4.7), with
// COPYUID (RFC 4315 section 3).
func (ss *session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	sel := ss.sel
	if sel == nil {
		return nil, errNotSelected
	}
	data, _, err := ss.transfer(sel, numSet, dest, false)
	return data, err
}

// Move moves messages to another folder (RFC 6851): the copy is durable
// before the originals are expunged.
func (ss *session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	sel := ss.sel
	if sel == nil {
		return errNotSelected
	}
	if sel.readOnly {
		return errReadOnly
	}
	data, src, err := ss.transfer(sel, numSet, dest, true)
	if err != nil {
		return err
	}
	if data == nil {
		return nil
	}
	if err := w.WriteCopyData(data); err != nil {
		return err
	}
	return sel.forget(w, src)
}

func (ss *session) transfer(sel *selected, numSet imap.NumSet, dest string, move bool) (*imap.CopyData, []uint32, error) {
	items := sel.resolve(numSet)
	var data imap.CopyData
	var src []uint32
	err := ss.s.call(func(p *post.Post, done func(error)) error {
		if !ss.exists(p, sel.f) {
			return errGone
		}
		dst, err := ss.folder(p, dest)
		if err == errNoMailbox {
			return errTryCreate
		} else if err != nil {
			return err
		}
		if move && dst == sel.f {
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Source and destination are the same mailbox"}
		}
		for _, it := range items {
			if _, ok := sel.f.Get(it.uid); ok {
				src = append(src, it.uid)
			}
		}
		data.UIDValidity = dst.UIDValidity()
		if len(src) == 0 {
			done(nil)
			return nil
		}
		cb := func(newUIDs []uint32, err error) {
			for _, u := range newUIDs {
				data.DestUIDs.AddNum(imap.UID(u))
			}
			done(err)
		}
		if move {
			sel.f.Move(src, dst, cb)
		} else {
			sel.f.Copy(src, dst, cb)
		}
		return nil
	})
	if err != nil || len(src) == 0 {
		return nil, nil, err
	}
	for _, u := range src {
		data.SourceUIDs.AddNum(imap.UID(u))
	}
	return &data, src, nil
}

// Search answers SEARCH and UID SEARCH (RFC 9051 section 6.4.4), with
// ESEARCH results and SEARCHRES (RFC 5182).
func (ss *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	sel := ss.sel
	if sel == nil {
		return nil, errNotSelected
	}
	sel.staticCriteria(criteria)
	items := make([]item, len(sel.uids))
	for i, uid := range sel.uids {
		items[i] = item{uint32(i + 1), uid}
	}
	needBody := needsBody(criteria)
	var data imap.SearchData
	var seqs imap.SeqSet
	var uids imap.UIDSet
	batch := metaBatch
	if needBody {
		batch = fetchBatch
	}
	for start := 0; start < len(items); start += batch {
		part, err := ss.load(sel, items[start:min(start+batch, len(items))], needBody)
		if err != nil {
			return nil, err
		}
		for i := range part {
			l := &part[i]
			if !l.ok || !match(l, criteria) {
				continue
			}
			uids.AddNum(imap.UID(l.uid))
			num := l.seq
			if kind == imapserver.NumKindUID {
				num = l.uid
			} else {
				seqs.AddNum(l.seq)
			}
			if data.Min == 0 || num < data.Min {
				data.Min = num
			}
			if num > data.Max {
				data.Max = num
			}
			data.Count++
		}
	}
	if kind == imapserver.NumKindUID {
		data.All = uids
	} else {
		data.All = seqs
	}
	if options != nil && options.ReturnSave {
		sel.searchRes = uids
	}
	return &data, nil
}

// staticCriteria resolves "*" and "$" in the criteria's sets.
func (sel *selected) staticCriteria(c *imap.SearchCriteria) {
	var seqs []imap.SeqSet
	for _, s := range c.SeqNum {
		if imap.IsSearchRes(s) {
			c.UID = append(c.UID, sel.searchRes)
			continue
		}
		seqs = append(seqs, staticSeqSet(s, uint32(len(sel.uids))))
	}
	c.SeqNum = seqs
	for i, s := range c.UID {
		if imap.IsSearchRes(s) {
			c.UID[i] = slices.Clone(sel.searchRes)
			continue
		}
		c.UID[i] = staticUIDSet(s, sel.lastUID())
	}
	for i := range c.Not {
		sel.staticCriteria(&c.Not[i])
	}
	for i := range c.Or {
		sel.staticCriteria(&c.Or[i][0])
		sel.staticCriteria(&c.Or[i][1])
	}
}
