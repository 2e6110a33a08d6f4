package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
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
