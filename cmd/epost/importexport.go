package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/epost-mail/epost/internal/mailnet"
)

// Import and export talk IMAP to the user's own node, as any mail client
// does: they need nothing but the node's IMAP address and the password,
// and what they store goes through the same path as a client's APPEND.

type importMsg struct {
	folder string
	data   []byte
	flags  []imap.Flag
	date   time.Time
}

// imapLogin connects and logs in, without TLS on loopback and with
// STARTTLS (trusting the node's self-signed certificate only with
// --insecure) elsewhere.
func imapLogin(addr, user, passFile string) (*imapclient.Client, error) {
	pw, err := readPassword(passFile)
	if err != nil {
		return nil, err
	}
	var c *imapclient.Client
	if mailnet.IsLoopback(addr) {
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return nil, err
		}
		c = imapclient.New(conn, nil)
	} else {
		c, err = imapclient.DialStartTLS(addr, nil)
		if err != nil {
			return nil, err
		}
	}
	if err := c.Login(user, pw).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("login as %s: %w", user, err)
	}
	return c, nil
}

func readPassword(file string) (string, error) {
	var raw []byte
	var err error
	if file == "-" {
		raw, err = io.ReadAll(io.LimitReader(os.Stdin, 4096))
	} else {
		raw, err = os.ReadFile(file)
	}
	if err != nil {
		return "", err
	}
	pw, _, _ := strings.Cut(string(bytes.TrimRight(raw, "\r\n")), "\n")
	return pw, nil
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
	var msgs []importMsg
	if pos[0] == "mbox" {
		msgs, err = readMbox(pos[1], *folder)
	} else {
		msgs, err = readMaildir(pos[1], *folder)
	}
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	if *state == "" {
		*state = strings.TrimRight(pos[1], "/") + ".epost-import"
	}
	done := map[string]bool{}
	if b, err := os.ReadFile(*state); err == nil {
		for _, l := range strings.Fields(string(b)) {
			done[l] = true
		}
	}
	sf, err := os.OpenFile(*state, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("import: state file: %w", err)
	}
	defer sf.Close()
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
	imported, skipped := 0, 0
	for i, m := range msgs {
		sum := sha256.Sum256(append([]byte(m.folder+"\x00"), m.data...))
		key := hex.EncodeToString(sum[:16])
		if done[key] {
			skipped++
			continue
		}
		if !have[m.folder] {
			if err := c.Create(m.folder, nil).Wait(); err != nil {
				return fmt.Errorf("import: create folder %s: %w", m.folder, err)
			}
			have[m.folder] = true
		}
		cmd := c.Append(m.folder, int64(len(m.data)), &imap.AppendOptions{Flags: m.flags, Time: m.date})
		if _, err := cmd.Write(m.data); err != nil {
			return fmt.Errorf("import: message %d: %w", i+1, err)
		}
		if err := cmd.Close(); err != nil {
			return fmt.Errorf("import: message %d: %w", i+1, err)
		}
		if _, err := cmd.Wait(); err != nil {
			return fmt.Errorf("import: message %d: %w (run the same command again to resume)", i+1, err)
		}
		// Recorded only once the node has stored it: a rerun resumes here.
		if _, err := fmt.Fprintln(sf, key); err != nil {
			return fmt.Errorf("import: state file: %w", err)
		}
		imported++
		if imported%25 == 0 || i == len(msgs)-1 {
			fmt.Fprintf(stdout, "\r%d of %d messages", i+1, len(msgs))
		}
	}
	fmt.Fprintf(stdout, "\nimported %d messages (%d already imported before)\n", imported, skipped)
	return nil
}

// readMbox reads the mbox file at path.
func readMbox(path, folder string) ([]importMsg, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return splitMbox(f, path, folder)
}

// splitMbox splits an mbox (mboxrd: ">From " lines unescaped) read from
// r; name names it in errors.
func splitMbox(r io.Reader, name, folder string) ([]importMsg, error) {
	var msgs []importMsg
	var cur *bytes.Buffer
	var date time.Time
	flush := func() {
		if cur != nil && cur.Len() > 0 {
			data := bytes.TrimRight(cur.Bytes(), "\r\n")
			data = append(append([]byte(nil), data...), '\r', '\n')
			msgs = append(msgs, importMsg{folder: folder, data: data, date: messageDate(data, date)})
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.HasPrefix(line, "From ") {
			flush()
			cur = &bytes.Buffer{}
			date = fromLineDate(line)
			continue
		}
		if cur == nil {
			return nil, fmt.Errorf("%s is not an mbox: it does not start with a \"From \" line", name)
		}
		if t := strings.TrimLeft(line, ">"); len(t) < len(line) && strings.HasPrefix(t, "From ") {
			line = line[1:]
		}
		cur.WriteString(line)
		cur.WriteString("\r\n")
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	flush()
	return msgs, nil
}

// fromLineDate reads the date of an mbox "From sender date" line.
func fromLineDate(line string) time.Time {
	f := strings.Fields(line)
	if len(f) >= 7 {
		if t, err := time.Parse("Mon Jan _2 15:04:05 2006", strings.Join(f[2:7], " ")); err == nil {
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

// readMaildir reads a maildir and its Maildir++ subfolders (.Name).
func readMaildir(root, folder string) ([]importMsg, error) {
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
	var msgs []importMsg
	keys := make([]string, 0, len(dirs))
	for d := range dirs {
		keys = append(keys, d)
	}
	sort.Strings(keys)
	for _, d := range keys {
		for _, sub := range []string{"new", "cur"} {
			files, err := os.ReadDir(filepath.Join(d, sub))
			if err != nil {
				continue
			}
			for _, fe := range files {
				if fe.IsDir() {
					continue
				}
				data, err := os.ReadFile(filepath.Join(d, sub, fe.Name()))
				if err != nil {
					return nil, err
				}
				var flags []imap.Flag
				if _, info, ok := strings.Cut(fe.Name(), ":2,"); ok {
					for i := 0; i < len(info); i++ {
						if f, ok := maildirFlags[info[i]]; ok {
							flags = append(flags, f)
						}
					}
				}
				date := time.Time{}
				if fi, err := fe.Info(); err == nil {
					date = fi.ModTime()
				}
				msgs = append(msgs, importMsg{folder: dirs[d], data: data, flags: flags, date: messageDate(data, date)})
			}
		}
	}
	return msgs, nil
}

// cmdExport writes a user's whole mailbox as a Maildir++ tree.
func cmdExport(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("export", "--user ADDRESS --password-file FILE [--imap ADDR] --maildir PATH", stderr)
	addr := flags.String("imap", "127.0.0.1:1143", "the user's node's IMAP address")
	user := flags.String("user", "", "the user to export")
	pass := flags.String("password-file", "", "file whose first line is the user's password (- reads standard input)")
	out := flags.String("maildir", "", "directory to write (INBOX at its top, other folders as .Name)")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *user == "" || *pass == "" || *out == "" {
		flags.Usage()
		return fmt.Errorf("%w: export: --user, --password-file and --maildir are required", errUsage)
	}
	c, err := imapLogin(*addr, *user, *pass)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer c.Close()
	list, err := c.List("", "*", nil).Collect()
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	total := 0
	for _, l := range list {
		dir := *out
		if l.Mailbox != "INBOX" {
			dir = filepath.Join(*out, "."+strings.ReplaceAll(l.Mailbox, "/", "."))
		}
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
				return err
			}
		}
		sel, err := c.Select(l.Mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
		if err != nil {
			return fmt.Errorf("export: %s: %w", l.Mailbox, err)
		}
		if sel.NumMessages == 0 {
			continue
		}
		var set imap.SeqSet
		set.AddRange(1, sel.NumMessages)
		msgs, err := c.Fetch(set, &imap.FetchOptions{UID: true, Flags: true, InternalDate: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
		if err != nil {
			return fmt.Errorf("export: %s: %w", l.Mailbox, err)
		}
		for _, m := range msgs {
			var body []byte
			for _, s := range m.BodySection {
				body = s.Bytes
			}
			name := fmt.Sprintf("%d.%d_%d.epost:2,%s", m.InternalDate.Unix(), sel.UIDValidity, m.UID, maildirInfo(m.Flags))
			tmp := filepath.Join(dir, "tmp", name)
			if err := os.WriteFile(tmp, body, 0o600); err != nil {
				return err
			}
			final := filepath.Join(dir, "cur", name)
			if err := os.Rename(tmp, final); err != nil {
				return err
			}
			if !m.InternalDate.IsZero() {
				_ = os.Chtimes(final, m.InternalDate, m.InternalDate)
			}
			total++
		}
		fmt.Fprintf(stdout, "%s: %d messages\n", l.Mailbox, len(msgs))
	}
	fmt.Fprintf(stdout, "exported %d messages to %s\n", total, *out)
	return nil
}

func maildirInfo(flags []imap.Flag) string {
	var b []byte
	for letter, f := range maildirFlags {
		for _, g := range flags {
			if strings.EqualFold(string(f), string(g)) {
				b = append(b, letter)
			}
		}
	}
	sort.Slice(b, func(i, j int) bool { return b[i] < b[j] })
	return string(b)
}
