package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"golang.org/x/term"
)

// An import reads one message at a time, so an mbox or maildir of any
// size takes the memory of its largest message. Each message has a key
// (a hash of its folder and its bytes as read, with the number of
// identical messages before it in the source), and the state file
// records keys as follows, one a line:
//
//	? KEY   the APPEND was sent; the node may or may not have stored it
//	KEY     the node answered OK: stored
//
// The "?" line is synced to disk before the APPEND goes out. A rerun
// skips stored keys and, for a key left at "?" (the import was killed, or
// the connection lost, before the answer), looks for the message in its
// folder before appending it again. So however an import stops, running
// it again neither duplicates nor misses a message.

type importMsg struct {
	folder string
	raw    []byte // the message as read (its key is computed over it)
	data   []byte // what is appended
	flags  []imap.Flag
	date   time.Time
}

// importSource yields a source's messages in order.
type importSource interface {
	// Total is how many messages Next yields, counted before the import.
	Total() int
	// Next returns the next message, or io.EOF after the last.
	Next() (*importMsg, error)
	Close() error
}

// cmdImport copies an mbox file or a maildir into a user's mailbox.
func cmdImport(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("import", "--user ADDRESS --password-file FILE [--imap ADDR] [--folder NAME] mbox|maildir PATH", stderr)
	addr := flags.String("imap", "127.0.0.1:1143", "the user's node's IMAP address")
	user := flags.String("user", "", "the user to import into")
	pass := flags.String("password-file", "", "file whose first line is the user's password (- reads standard input)")
	folder := flags.String("folder", "INBOX", "folder for an mbox, or for a maildir's top level")
	state := flags.String("state", "", "file recording what is imported, so an interrupted import resumes (default PATH.epost-import)")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || (pos[0] != "mbox" && pos[0] != "maildir") || *user == "" || *pass == "" {
		flags.Usage()
		return fmt.Errorf("%w: import: --user, --password-file and mbox|maildir PATH are required", errUsage)
	}
	var src importSource
	if pos[0] == "mbox" {
		src, err = openMbox(pos[1], *folder)
	} else {
		src, err = openMaildir(pos[1], *folder)
	}
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	defer src.Close()
	if *state == "" {
		*state = strings.TrimRight(pos[1], "/") + ".epost-import"
	}
	st, err := openImportState(*state)
	if err != nil {
		return fmt.Errorf("import: state file: %w", err)
	}
	defer st.Close()
	c, err := imapLogin(*addr, *user, *pass)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	defer c.Close()
	have := map[string]bool{}
	if list, err := c.List("", "*", nil).Collect(); err == nil {
		for _, l := range list {
			have[l.Mailbox] = true
		}
	}
	prog := newProgress(stdout, src.Total())
	// The bar's line ends before any error is printed.
	defer prog.stop()
	seen := map[[sha256.Size]byte]int{}
	imported, skipped := 0, 0
	for i := 1; ; i++ {
		m, err := src.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		sum := sha256.Sum256(append([]byte(m.folder+"\x00"), m.raw...))
		key := hex.EncodeToString(sum[:16])
		// Identical messages in one source are each imported.
		if n := seen[sum]; n > 0 {
			key += "." + strconv.Itoa(n)
		}
		seen[sum]++
		if st.done[key] {
			skipped++
			prog.update(i)
			continue
		}
		if st.pending[key] && have[m.folder] {
			stored, err := alreadyStored(c, m, seen[sum]-1)
			if err != nil {
				return fmt.Errorf("import: message %d: checking an unanswered APPEND: %w", i, err)
			}
			if stored {
				if err := st.record(key, false); err != nil {
					return fmt.Errorf("import: state file: %w", err)
				}
				imported++
				prog.update(i)
				continue
			}
		}
		if !have[m.folder] {
			if err := c.Create(m.folder, nil).Wait(); err != nil {
				return fmt.Errorf("import: create folder %s: %w", m.folder, err)
			}
			have[m.folder] = true
		}
		if err := st.record(key, true); err != nil {
			return fmt.Errorf("import: state file: %w", err)
		}
		if err := appendMsg(c, m); err != nil {
			return fmt.Errorf("import: message %d: %w (run the same command again to resume)", i, err)
		}
		if err := st.record(key, false); err != nil {
			return fmt.Errorf("import: state file: %w", err)
		}
		imported++
		prog.update(i)
	}
	prog.stop()
	if err := st.Close(); err != nil {
		return fmt.Errorf("import: state file: %w", err)
	}
	fmt.Fprintf(stdout, "imported %d messages (%d already imported before)\n", imported, skipped)
	return nil
}

func appendMsg(c *imapclient.Client, m *importMsg) error {
	cmd := c.Append(m.folder, int64(len(m.data)), &imap.AppendOptions{Flags: m.flags, Time: m.date})
	if _, err := cmd.Write(m.data); err != nil {
		return err
	}
	if err := cmd.Close(); err != nil {
		return err
	}
	_, err := cmd.Wait()
	return err
}

// alreadyStored reports whether m's folder holds more than before copies
// of m: before identical messages earlier in the source were stored
// there already, so one more is the one whose APPEND went unanswered.
func alreadyStored(c *imapclient.Client, m *importMsg, before int) (bool, error) {
	if _, err := c.Select(m.folder, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		return false, err
	}
	defer func() { _ = c.Unselect().Wait() }()
	size := int64(len(m.data))
	res, err := c.UIDSearch(&imap.SearchCriteria{Larger: size - 1, Smaller: size + 1}, nil).Wait()
	if err != nil {
		return false, err
	}
	uids := res.AllUIDs()
	if len(uids) <= before {
		return false, nil
	}
	want := sha256.Sum256(m.data)
	copies := 0
	// One message at a time: a folder may hold many of the same size.
	for _, uid := range uids {
		msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
		if err != nil {
			return false, err
		}
		for _, fm := range msgs {
			for _, b := range fm.BodySection {
				if sha256.Sum256(b.Bytes) == want {
					copies++
				}
			}
		}
		if copies > before {
			return true, nil
		}
	}
	return false, nil
}

// importState is the state file of an import.
type importState struct {
	f             *os.File
	done, pending map[string]bool
}

func openImportState(path string) (*importState, error) {
	st := &importState{done: map[string]bool{}, pending: map[string]bool{}}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, ok := strings.CutPrefix(l, "? "); ok && validImportKey(k) {
			st.pending[k] = true
		} else if validImportKey(l) {
			st.done[l] = true
		}
		// Anything else (a line cut short by a crash) is ignored.
	}
	st.f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		// End the cut line, so that it does not swallow the next key.
		if _, err := st.f.WriteString("\n"); err != nil {
			st.f.Close()
			return nil, err
		}
	}
	return st, nil
}

// validImportKey: 32 hex digits, then optionally a dot and a number.
func validImportKey(k string) bool {
	h, n, dotted := strings.Cut(k, ".")
	if len(h) != 32 || strings.Trim(h, "0123456789abcdef") != "" {
		return false
	}
	if dotted {
		if _, err := strconv.Atoi(n); err != nil || n == "" || n[0] == '-' || n[0] == '+' {
			return false
		}
	}
	return true
}

// record writes key as sent (pending, synced before the APPEND goes out)
// or as stored. A lost "stored" line only costs a look in the folder on
// the next run: the "?" line before it is on disk.
func (st *importState) record(key string, pending bool) error {
	if pending {
		if _, err := st.f.WriteString("? " + key + "\n"); err != nil {
			return err
		}
		st.pending[key] = true
		return st.f.Sync()
	}
	_, err := st.f.WriteString(key + "\n")
	st.done[key] = true
	return err
}

func (st *importState) Close() error {
	if st.f == nil {
		return nil
	}
	err := st.f.Sync()
	if cerr := st.f.Close(); err == nil {
		err = cerr
	}
	st.f = nil
	return err
}

// progress shows how far an import got: a bar redrawn in place on a
// terminal, a line every tenth of the way otherwise (a log, a pipe).
type progress struct {
	w      io.Writer
	total  int
	tty    bool
	shown  int // the last percentage shown; -1 before the first
	active bool
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total, shown: -1}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	return p
}

func (p *progress) update(done int) {
	if p.total <= 0 {
		return
	}
	pct := done * 100 / p.total
	if p.tty {
		if pct != p.shown || done == p.total {
			fmt.Fprint(p.w, "\r"+progressBar(done, p.total, 30))
			p.active = true
		}
		p.shown = pct
		return
	}
	// A line at each 10% step and at the end.
	if pct/10 > p.shown/10 || done == p.total && p.shown != 100 {
		fmt.Fprintf(p.w, "%d/%d messages (%d%%)\n", done, p.total, pct)
		p.shown = pct
	}
}

// stop ends the bar's line, before anything else is printed.
func (p *progress) stop() {
	if p.active {
		fmt.Fprintln(p.w)
		p.active = false
	}
}

// progressBar draws "[#####     ]  50% 500/1000" with width cells.
func progressBar(done, total, width int) string {
	if total <= 0 {
		return ""
	}
	done = min(max(done, 0), total)
	fill := done * width / total
	return fmt.Sprintf("[%s%s] %3d%% %d/%d", strings.Repeat("#", fill), strings.Repeat(" ", width-fill), done*100/total, done, total)
}

// mboxSource reads an mbox (mboxrd: ">From " lines unescaped) one
// message at a time.
type mboxSource struct {
	f      *os.File
	r      *bufio.Reader
	name   string
	folder string
	total  int
	from   string // the "From " line starting the next message
	eof    bool
}

func openMbox(path, folder string) (*mboxSource, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	// A first pass counts the messages for the progress bar.
	n, err := countMbox(f)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &mboxSource{f: f, r: bufio.NewReaderSize(f, 64<<10), name: path, folder: folder, total: n}, nil
}

func (s *mboxSource) Total() int   { return s.total }
func (s *mboxSource) Close() error { return s.f.Close() }

// countMbox counts the messages Next yields: "From " lines followed by
// at least one line of their own.
func countMbox(r io.Reader) (int, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	n, atStart, open := 0, true, false
	for {
		line, err := br.ReadSlice('\n')
		if atStart && len(line) > 0 {
			if bytes.HasPrefix(line, []byte("From ")) {
				open = true
			} else if open {
				n++
				open = false
			}
		}
		atStart = err != bufio.ErrBufferFull
		if err == io.EOF {
			return n, nil
		} else if err != nil && err != bufio.ErrBufferFull {
			return n, err
		}
	}
}

// readLine returns the next line without its line ending; ok is false at
// the end of the file.
func (s *mboxSource) readLine() (string, bool, error) {
	line, err := s.r.ReadString('\n')
	if err == io.EOF {
		if line == "" {
			return "", false, nil
		}
	} else if err != nil {
		return "", false, err
	}
	return strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r"), true, nil
}

func (s *mboxSource) Next() (*importMsg, error) {
	for !s.eof && s.from == "" {
		// The first message: its "From " line must open the file.
		line, ok, err := s.readLine()
		if err != nil {
			return nil, err
		}
		if !ok {
			s.eof = true
			break
		}
		if !strings.HasPrefix(line, "From ") {
			return nil, fmt.Errorf("%s is not an mbox: it does not start with a \"From \" line", s.name)
		}
		s.from = line
	}
	for !s.eof {
		var cur bytes.Buffer
		from := s.from
		s.from = ""
		for {
			line, ok, err := s.readLine()
			if err != nil {
				return nil, err
			}
			if !ok {
				s.eof = true
				break
			}
			if strings.HasPrefix(line, "From ") {
				s.from = line
				break
			}
			if t := strings.TrimLeft(line, ">"); len(t) < len(line) && strings.HasPrefix(t, "From ") {
				line = line[1:]
			}
			cur.WriteString(line)
			cur.WriteString("\r\n")
		}
		if cur.Len() == 0 {
			continue // an empty message: nothing to import
		}
		raw := append(bytes.TrimRight(cur.Bytes(), "\r\n"), '\r', '\n')
		data, flags := mboxStatus(raw)
		return &importMsg{folder: s.folder, raw: raw, data: data, flags: flags, date: messageDate(raw, fromLineDate(from))}, nil
	}
	return nil, io.EOF
}

// splitMbox reads a whole mbox from r; name names it in errors.
func splitMbox(r io.Reader, name, folder string) ([]importMsg, error) {
	s := &mboxSource{r: bufio.NewReader(r), name: name, folder: folder}
	var msgs []importMsg
	for {
		m, err := s.Next()
		if err == io.EOF {
			return msgs, nil
		} else if err != nil {
			return nil, err
		}
		msgs = append(msgs, *m)
	}
}

// mboxStatusFlags and mboxXStatusFlags are the letters mail readers (mutt,
// Thunderbird, Pine) keep in an mbox message's Status and X-Status
// fields. Status O (old: seen by the reader, not necessarily read) has no
// IMAP flag: it only takes \Recent away.
var (
	mboxStatusFlags  = map[byte]imap.Flag{'R': imap.FlagSeen}
	mboxXStatusFlags = map[byte]imap.Flag{'A': imap.FlagAnswered, 'F': imap.FlagFlagged, 'D': imap.FlagDeleted, 'T': imap.FlagDraft}
)

// mboxStatus returns msg without its Status and X-Status header fields,
// which become IMAP flags (left in, they would go stale as soon as the
// flags change). A message whose header does not end in a blank line
// keeps them, so that no message becomes empty.
func mboxStatus(msg []byte) ([]byte, []imap.Flag) {
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	switch {
	case bytes.HasPrefix(msg, []byte("\r\n")):
		end = 0 // no header at all
	case end < 0:
		end = len(msg)
	default:
		end += 2
	}
	strip := end < len(msg)
	var out bytes.Buffer
	var flags []imap.Flag
	has := map[imap.Flag]bool{}
	rest := msg[:end]
	for len(rest) > 0 {
		// One field: a line and its continuation lines.
		n := 0
		for {
			i := bytes.Index(rest[n:], []byte("\r\n"))
			if i < 0 {
				n = len(rest)
				break
			}
			n += i + 2
			if n >= len(rest) || (rest[n] != ' ' && rest[n] != '\t') {
				break
			}
		}
		field := rest[:n]
		rest = rest[n:]
		name, value, _ := bytes.Cut(field, []byte(":"))
		var table map[byte]imap.Flag
		switch strings.ToLower(string(bytes.TrimSpace(name))) {
		case "status":
			table = mboxStatusFlags
		case "x-status":
			table = mboxXStatusFlags
		}
		if table == nil {
			out.Write(field)
			continue
		}
		for _, c := range bytes.TrimSpace(value) {
			if f, ok := table[c]; ok && !has[f] {
				has[f] = true
				flags = append(flags, f)
			}
		}
		if !strip {
			out.Write(field)
		}
	}
	out.Write(msg[end:])
	return out.Bytes(), flags
}

// fromLineDate reads the date of an mbox "From sender date" line: an
// asctime date in UTC, which some writers follow with a zone.
func fromLineDate(line string) time.Time {
	f := strings.Fields(line)
	if len(f) < 7 {
		return time.Time{}
	}
	d := strings.Join(f[2:], " ")
	for _, layout := range []string{"Mon Jan _2 15:04:05 2006", "Mon Jan _2 15:04:05 2006 -0700", "Mon Jan _2 15:04:05 MST 2006", "Mon Jan _2 15:04 2006"} {
		if t, err := time.Parse(layout, d); err == nil {
			return t
		}
	}
	return time.Time{}
}

// messageDate prefers the envelope date, then the Date header.
func messageDate(data []byte, envelope time.Time) time.Time {
	if !envelope.IsZero() {
		return envelope
	}
	if m, err := mail.ReadMessage(bytes.NewReader(data)); err == nil {
		if t, err := m.Header.Date(); err == nil {
			return t
		}
	}
	return time.Time{}
}

var maildirFlags = map[byte]imap.Flag{'D': imap.FlagDraft, 'F': imap.FlagFlagged, 'R': imap.FlagAnswered, 'S': imap.FlagSeen, 'T': imap.FlagDeleted, 'P': "$Forwarded"}

// maildirSource reads a maildir and its Maildir++ subfolders (.Name),
// listing the files first and reading one at a time.
type maildirSource struct {
	files []maildirFile
	next  int
}

type maildirFile struct{ folder, path string }

func openMaildir(root, folder string) (*maildirSource, error) {
	if _, err := os.Stat(filepath.Join(root, "cur")); err != nil {
		return nil, fmt.Errorf("%s is not a maildir (no cur/): %w", root, err)
	}
	dirs := map[string]string{root: folder}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), ".") && len(e.Name()) > 1 {
			dirs[filepath.Join(root, e.Name())] = strings.ReplaceAll(e.Name()[1:], ".", "/")
		}
	}
	keys := make([]string, 0, len(dirs))
	for d := range dirs {
		keys = append(keys, d)
	}
	sort.Strings(keys)
	s := &maildirSource{}
	for _, d := range keys {
		for _, sub := range []string{"new", "cur"} {
			files, err := os.ReadDir(filepath.Join(d, sub))
			if err != nil {
				continue
			}
			for _, fe := range files {
				if !fe.IsDir() {
					s.files = append(s.files, maildirFile{folder: dirs[d], path: filepath.Join(d, sub, fe.Name())})
				}
			}
		}
	}
	return s, nil
}

func (s *maildirSource) Total() int   { return len(s.files) }
func (s *maildirSource) Close() error { return nil }

func (s *maildirSource) Next() (*importMsg, error) {
	if s.next == len(s.files) {
		return nil, io.EOF
	}
	mf := s.files[s.next]
	s.next++
	f, err := os.Open(mf.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	var flags []imap.Flag
	if _, info, ok := strings.Cut(filepath.Base(mf.path), ":2,"); ok {
		for i := 0; i < len(info); i++ {
			if fl, ok := maildirFlags[info[i]]; ok {
				flags = append(flags, fl)
			}
		}
	}
	// The file's modification time is when it was delivered (Dovecot and
	// Courier read it so, and export sets it); the Date header is the
	// fallback.
	var date time.Time
	if fi, err := f.Stat(); err == nil {
		date = fi.ModTime()
	}
	return &importMsg{folder: mf.folder, raw: data, data: data, flags: flags, date: messageDate(data, date)}, nil
}
