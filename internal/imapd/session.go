package imapd

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/post"
)

// delim separates levels of the folder hierarchy in IMAP names; POST
// folder names are the IMAP names as they are.
const delim = '/'

// specialUse maps POST's default folders to their RFC 6154 attributes.
var specialUse = map[string]imap.MailboxAttr{
	"Sent":    imap.MailboxAttrSent,
	"Drafts":  imap.MailboxAttrDrafts,
	"Trash":   imap.MailboxAttrTrash,
	"Junk":    imap.MailboxAttrJunk,
	"Archive": imap.MailboxAttrArchive,
}

// session is one IMAP connection's state.
type session struct {
	s *Server

	mu   sync.Mutex // held for the whole of every command; guards the fields below
	addr string     // the authenticated user; "" before LOGIN
	sel  *selected  // nil unless a folder is selected

	notify chan struct{} // signalled (on the loop) when the selected folder changes

	remote string      // the client's address, as the login limiter counts it
	authed atomic.Bool // logged in: the connection's timeout is IdleTimeout
}

// selected is what IMAP makes per-session for the selected folder: the
// client's view of sequence numbers and the flags it was last told.
type selected struct {
	f         *post.Folder
	readOnly  bool
	uids      []uint32 // seq n is uids[n-1]; ascending
	flags     map[uint32][]imap.Flag
	searchRes imap.UIDSet
}

var (
	_ imapserver.SessionIMAP4rev2      = (*session)(nil)
	_ imapserver.SessionUnauthenticate = (*session)(nil)
	_ imapserver.SessionAppendLimit    = (*session)(nil)
	_ imapserver.Session               = (*session)(nil)
)

// wake tells an idling session that its folder changed. On the loop; never
// blocks.
func (ss *session) wake() {
	select {
	case ss.notify <- struct{}{}:
	default:
	}
}

// Close ends the session.
func (ss *session) Close() error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.unselectLocked()
	return nil
}

func (ss *session) unselectLocked() {
	if ss.sel == nil {
		return
	}
	f := ss.sel.f
	ss.sel = nil
	ss.s.cfg.Loop.Do(func() { ss.s.unsubscribe(f, ss) })
}

// Login checks the password (RFC 9051 section 6.2.3); AUTHENTICATE PLAIN
// comes here too.
//
// Failures count against the username and the client's address; while
// either is locked out (see AuthLimit), a login is refused before the
// password is checked.
func (ss *session) Login(username, password string) error {
	lim := ss.s.limiter
	if d := max(lim.lockedFor(ss.remote), lim.lockedFor(userKey(username))); d > 0 {
		ss.s.stats.loginThrottled.Add(1)
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
			Text: fmt.Sprintf("Too many failed logins, try again in %d s", int(math.Ceil(d.Seconds())))}
	}
	err := ss.login(username, password)
	if err == imapserver.ErrAuthFailed {
		ss.s.stats.loginFailed.Add(1)
		lock := max(lim.fail(ss.remote, lim.cfg.FreePerIP), lim.fail(userKey(username), lim.cfg.Free))
		ss.s.cfg.Log.Warn("imapd: authentication failed", "remote", ss.remote, "username", username,
			"lockout", lock.Round(time.Second))
	} else if err == nil {
		ss.s.stats.loginOK.Add(1)
	}
	return err
}

func (ss *session) login(username, password string) error {
	if ss.s.cfg.Auth == nil {
		return imapserver.ErrAuthFailed
	}
	addr, ok := ss.s.cfg.Auth.Check(username, password)
	if !ok {
		return imapserver.ErrAuthFailed
	}
	addr, err := identity.CanonicalAddress(addr)
	if err != nil {
		return imapserver.ErrAuthFailed
	}
	err = ss.s.do(func(p *post.Post) error {
		a := p.User(addr)
		if a == nil {
			return imapserver.ErrAuthFailed
		}
		if !a.Ready() {
			return errUnavailable
		}
		return nil
	})
	if err != nil {
		return err
	}
	ss.mu.Lock()
	ss.addr = addr
	ss.mu.Unlock()
	ss.authed.Store(true)
	return nil
}

// Unauthenticate returns to the not-authenticated state (RFC 8437).
func (ss *session) Unauthenticate() error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.unselectLocked()
	ss.addr = ""
	ss.authed.Store(false)
	return nil
}

// AppendLimit is the largest message APPEND takes (RFC 7889).
func (ss *session) AppendLimit() uint32 { return ss.s.cfg.AppendLimit }

// account is the session's user's mailbox. On the loop.
func (ss *session) account(p *post.Post) (*post.Account, error) {
	a := p.User(ss.addr)
	if a == nil || !a.Ready() {
		return nil, errUnavailable
	}
	return a, nil
}

// folder returns the named folder. On the loop.
func (ss *session) folder(p *post.Post, name string) (*post.Folder, error) {
	a, err := ss.account(p)
	if err != nil {
		return nil, err
	}
	f, ok := a.Folder(canonicalName(name))
	if !ok {
		return nil, errNoMailbox
	}
	return f, nil
}

// canonicalName: INBOX is case-insensitive (RFC 9051 section 5.1); a
// trailing delimiter names the same folder. The delimiter goes first, so
// that "inbox/" is INBOX too and not a folder "inbox" no command could
// reach.
func canonicalName(name string) string {
	if n := strings.TrimRight(name, string(delim)); n != "" {
		name = n
	}
	if strings.EqualFold(name, "INBOX") {
		return "INBOX"
	}
	return name
}

// Create makes a folder (RFC 9051 section 6.3.4), and the folders above
// it in the hierarchy that do not exist yet, as the RFC recommends.
func (ss *session) Create(name string, options *imap.CreateOptions) error {
	name = canonicalName(name)
	if name == "INBOX" {
		return errExists
	}
	if name == "" || strings.Contains(name, "//") || strings.HasPrefix(name, string(delim)) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Invalid mailbox name"}
	}
	if options != nil && len(options.SpecialUse) > 0 {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCode("USEATTR"), Text: "Special-use attributes are fixed"}
	}
	for i, r := range name {
		if r != delim {
			continue
		}
		parent := name[:i]
		err := ss.s.call(func(p *post.Post, done func(error)) error {
			a, err := ss.account(p)
			if err != nil {
				return err
			}
			if _, ok := a.Folder(canonicalName(parent)); ok {
				done(nil)
				return nil
			}
			a.CreateFolder(parent, done)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return ss.s.call(func(p *post.Post, done func(error)) error {
		a, err := ss.account(p)
		if err != nil {
			return err
		}
		if _, ok := a.Folder(name); ok {
			return errExists
		}
		a.CreateFolder(name, done)
		return nil
	})
}

// Delete removes a folder (RFC 9051 section 6.3.5); INBOX stays.
func (ss *session) Delete(name string) error {
	name = canonicalName(name)
	if name == "INBOX" {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "INBOX cannot be deleted"}
	}
	return ss.s.call(func(p *post.Post, done func(error)) error {
		a, err := ss.account(p)
		if err != nil {
			return err
		}
		if _, ok := a.Folder(name); !ok {
			return errNoMailbox
		}
		a.DeleteFolder(name, done)
		return nil
	})
}

// Rename renames a folder (RFC 9051 section 6.3.6). Renaming INBOX, which
// IMAP defines as moving its messages, is not supported yet.
func (ss *session) Rename(from, to string, options *imap.RenameOptions) error {
	from, to = canonicalName(from), canonicalName(to)
	if from == "INBOX" {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Renaming INBOX is not supported"}
	}
	if to == "INBOX" {
		return errExists
	}
	return ss.s.call(func(p *post.Post, done func(error)) error {
		a, err := ss.account(p)
		if err != nil {
			return err
		}
		if _, ok := a.Folder(from); !ok {
			return errNoMailbox
		}
		if _, ok := a.Folder(to); ok {
			return errExists
		}
		// Inferior names move along (RFC 9051 section 6.3.6).
		renames := [][2]string{{from, to}}
		for _, n := range a.Folders() {
			if rest, ok := strings.CutPrefix(n, from+string(delim)); ok {
				if _, taken := a.Folder(to + string(delim) + rest); taken {
					return errExists
				}
				renames = append(renames, [2]string{n, to + string(delim) + rest})
			}
		}
		n := len(renames)
		var firstErr error
		for _, r := range renames {
			a.RenameFolder(r[0], r[1], func(err error) {
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if n--; n == 0 {
					done(firstErr)
				}
			})
		}
		return nil
	})
}

// Subscribe adds an existing folder to the user's subscriptions (RFC 9051
// section 6.3.7), which POST keeps in the user's root record.
func (ss *session) Subscribe(name string) error { return ss.setSubscribed(name, true) }

// Unsubscribe removes a folder from the subscriptions (RFC 9051 section
// 6.3.8).
func (ss *session) Unsubscribe(name string) error { return ss.setSubscribed(name, false) }

func (ss *session) setSubscribed(name string, on bool) error {
	name = canonicalName(name)
	return ss.s.call(func(p *post.Post, done func(error)) error {
		a, err := ss.account(p)
		if err != nil {
			return err
		}
		if _, ok := a.Folder(name); !ok {
			return errNoMailbox
		}
		a.SetSubscribed(name, on, done)
		return nil
	})
}

// Namespace: one personal namespace, no prefix (RFC 2342).
func (ss *session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: delim}}}, nil
}

// List answers LIST and LSUB (RFC 9051 section 6.3.9, RFC 5258, RFC 6154).
func (ss *session) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	if len(patterns) == 0 {
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: delim})
	}
	var out []imap.ListData
	err := ss.s.do(func(p *post.Post) error {
		a, err := ss.account(p)
		if err != nil {
			return err
		}
		names := a.Folders()
		for _, name := range names {
			match := false
			for _, pat := range patterns {
				if imapserver.MatchList(name, delim, ref, pat) {
					match = true
					break
				}
			}
			if !match {
				continue
			}
			use, special := specialUse[name]
			if options.SelectSpecialUse && !special {
				continue
			}
			// LSUB and LIST (SUBSCRIBED) list subscribed folders only
			// (RFC 5258 section 3.1).
			subscribed := a.Subscribed(name)
			if options.SelectSubscribed && !subscribed {
				continue
			}
			d := imap.ListData{Mailbox: name, Delim: delim}
			if subscribed && (options.SelectSubscribed || options.ReturnSubscribed) {
				d.Attrs = append(d.Attrs, imap.MailboxAttrSubscribed)
			}
			if hasChildren(names, name) {
				d.Attrs = append(d.Attrs, imap.MailboxAttrHasChildren)
			} else {
				d.Attrs = append(d.Attrs, imap.MailboxAttrHasNoChildren)
			}
			if special {
				d.Attrs = append(d.Attrs, use)
			}
			if options.ReturnStatus != nil {
				f, _ := a.Folder(name)
				d.Status = statusData(f, options.ReturnStatus)
			}
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := range out {
		if err := w.WriteList(&out[i]); err != nil {
			return err
		}
	}
	return nil
}

func hasChildren(names []string, name string) bool {
	prefix := name + string(delim)
	i := sort.SearchStrings(names, prefix)
	return i < len(names) && strings.HasPrefix(names[i], prefix)
}

// Status answers STATUS (RFC 9051 section 6.3.11).
func (ss *session) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	var data *imap.StatusData
	err := ss.s.do(func(p *post.Post) error {
		f, err := ss.folder(p, name)
		if err != nil {
			return err
		}
		data = statusData(f, options)
		return nil
	})
	return data, err
}

// statusData counts a folder. On the loop.
func statusData(f *post.Folder, options *imap.StatusOptions) *imap.StatusData {
	d := &imap.StatusData{Mailbox: f.Name()}
	msgs := f.Messages()
	if options.NumMessages {
		n := uint32(len(msgs))
		d.NumMessages = &n
	}
	if options.UIDNext {
		d.UIDNext = imap.UID(f.UIDNext())
	}
	if options.UIDValidity {
		d.UIDValidity = f.UIDValidity()
	}
	if options.NumRecent {
		var zero uint32
		d.NumRecent = &zero
	}
	var unseen, deleted uint32
	var size int64
	for _, m := range msgs {
		if !slices.Contains(m.Flags, string(imap.FlagSeen)) {
			unseen++
		}
		if slices.Contains(m.Flags, string(imap.FlagDeleted)) {
			deleted++
		}
		size += m.Body.Size
	}
	if options.NumUnseen {
		d.NumUnseen = &unseen
	}
	if options.NumDeleted {
		d.NumDeleted = &deleted
	}
	if options.Size {
		d.Size = &size
	}
	return d
}

// Append stores an uploaded message (RFC 9051 section 6.3.12, RFC 4315
// APPENDUID).
func (ss *session) Append(mailbox string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	if r.Size() > int64(ss.s.cfg.AppendLimit) {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTooBig, Text: "Message too big"}
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(r, int64(ss.s.cfg.AppendLimit)+1)); err != nil {
		return nil, err
	}
	date := time.Now()
	var flags []string
	if options != nil {
		if !options.Time.IsZero() {
			date = options.Time
		}
		flags = postFlags(options.Flags)
	}
	var data imap.AppendData
	err := ss.s.call(func(p *post.Post, done func(error)) error {
		f, err := ss.folder(p, mailbox)
		if err == errNoMailbox {
			return errTryCreate
		} else if err != nil {
			return err
		}
		data.UIDValidity = f.UIDValidity()
		f.Append(buf.Bytes(), flags, date.UnixMicro(), func(uid uint32, err error) {
			data.UID = imap.UID(uid)
			done(err)
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &data, nil
}

// systemFlags are IMAP's flags that begin with a backslash (RFC 9051
// section 2.3.2), in their canonical spelling; flags are case-insensitive.
var systemFlags = []imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft}

// canonicalFlag spells system flags one way, so POST's exact-match flag
// sets hold each once. Keywords are kept as the client sent them.
func canonicalFlag(f imap.Flag) imap.Flag {
	for _, s := range systemFlags {
		if strings.EqualFold(string(f), string(s)) {
			return s
		}
	}
	return f
}

// postFlags converts flags for POST: canonical, without \Recent (which
// the server alone sets) and duplicates, sorted.
func postFlags(flags []imap.Flag) []string {
	var out []string
	for _, f := range flags {
		f = canonicalFlag(f)
		if strings.EqualFold(string(f), `\Recent`) || f == "" {
			continue
		}
		if !slices.Contains(out, string(f)) {
			out = append(out, string(f))
		}
	}
	sort.Strings(out)
	return out
}

// imapFlags converts POST's flags for IMAP.
func imapFlags(flags []string) []imap.Flag {
	out := make([]imap.Flag, len(flags))
	for i, f := range flags {
		out[i] = imap.Flag(f)
	}
	return out
}

func sameFlags(a []imap.Flag, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if string(a[i]) != b[i] {
			return false
		}
	}
	return true
}
