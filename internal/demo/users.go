package demo

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/imapd"
	"github.com/epost-mail/epost/internal/node"
	"github.com/epost-mail/epost/internal/smtpd"
)

// Domain is the demo community's mail domain.
const Domain = "demo.epost"

var names = []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter"}

// User is one demo user: served by one node, with its own IMAP and SMTP
// listeners on loopback.
type User struct {
	Address  string `json:"address"`
	Password string `json:"password"`
	IMAP     string `json:"imap"`
	SMTP     string `json:"smtp"`
	Node     string `json:"node"`
}

// passwords checks the demo users' passwords (they are generated and
// printed, so they are kept as they are; a real node keeps only hashes).
type passwords map[string]string

func (p passwords) Check(username, password string) (string, bool) {
	addr, err := identity.CanonicalAddress(username)
	if err != nil {
		return "", false
	}
	want, ok := p[addr]
	if !ok || subtle.ConstantTimeCompare([]byte(want), []byte(password)) != 1 {
		return "", false
	}
	return addr, true
}

func userName(i int) string {
	if i < len(names) {
		return names[i]
	}
	return fmt.Sprintf("user%d", i+1)
}

func newPassword() (string, error) {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)), nil
}

// startUser makes node i's user: keys, certificate, mailbox, a welcome
// message, and IMAP and SMTP listeners.
func (c *Community) startUser(ctx context.Context, i int, nd *node.Node) error {
	addr := userName(i) + "@" + Domain
	keys, cert, err := c.userFiles(addr, func() (identity.UserKeys, *identity.UserCert, error) {
		keys, err := identity.GenerateUserKeys(rand.Reader, addr)
		if err != nil {
			return keys, nil, err
		}
		cert, err := c.ca.IssueUser(rand.Reader, addr, keys.Signing.Public(), keys.Sealing.Recipient())
		return keys, cert, err
	})
	if err != nil {
		return err
	}
	pw := c.pw[keys.Address]
	ready := make(chan error, 1)
	if err := nd.Do(func() {
		if _, err := nd.Mail().AddUser(keys, cert, func(e error) { ready <- e }); err != nil {
			ready <- err
		}
	}); err != nil {
		return err
	}
	select {
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("demo: mailbox of %s: %w", addr, err)
		}
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(c.cfg.JoinTimeout):
		return fmt.Errorf("demo: mailbox of %s: %w", addr, errTimeout)
	}
	imapAt, smtpAt := "127.0.0.1:0", "127.0.0.1:0"
	if c.resumed && i < len(c.saved.Users) {
		imapAt, smtpAt = c.saved.Users[i].IMAP, c.saved.Users[i].SMTP // the same ports as last time
	} else if err := c.welcome(nd, keys.Address); err != nil {
		return err
	}
	u := User{Address: keys.Address, Password: pw, Node: nd.ID().Short()}
	il, err := net.Listen("tcp", imapAt)
	if err != nil {
		return fmt.Errorf("demo: IMAP for %s on %s: %w", addr, imapAt, err)
	}
	is := imapd.New(imapd.Config{Loop: nd, Mail: nd.Mail, Auth: c.pw, InsecureAuth: true, Log: c.cfg.Log})
	sl, err := net.Listen("tcp", smtpAt)
	if err != nil {
		il.Close()
		return fmt.Errorf("demo: SMTP for %s on %s: %w", addr, smtpAt, err)
	}
	ss := smtpd.New(smtpd.Config{Loop: nd, Mail: nd.Mail, Auth: c.pw, Domains: []string{Domain}, Hostname: "localhost", Log: c.cfg.Log})
	nd.AddCounters("imap", func() any { return is.Stats() })
	nd.AddCounters("smtp", func() any { return ss.Stats() })
	u.IMAP, u.SMTP = il.Addr().String(), sl.Addr().String()
	c.mu.Lock()
	c.users = append(c.users, u)
	c.accounts = append(c.accounts, account{keys: keys, node: nd})
	c.closers = append(c.closers, is.Close, ss.Close)
	c.mu.Unlock()
	go func() { _ = is.Serve(il) }()
	go func() { _ = ss.Serve(sl) }()
	return nil
}

// welcomeMessage is the first message in addr's INBOX, from
// welcome@DOMAIN.
func welcomeMessage(addr string, now time.Time) string {
	name, domain, _ := strings.Cut(addr, "@")
	return fmt.Sprintf("From: epost demo <welcome@%s>\r\nTo: %s\r\nSubject: Welcome to epost\r\nDate: %s\r\nMessage-ID: <welcome.%s>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"+
		"Hello %s,\r\n\r\nthis mailbox lives on no mail server: it is stored, encrypted, on the\r\n"+
		"community's nodes. Send a message to another demo user and watch it arrive.\r\n",
		domain, addr, now.Format(time.RFC1123Z), addr, name)
}

// welcome puts a first message in a user's INBOX.
func (c *Community) welcome(nd *node.Node, addr string) error {
	msg := welcomeMessage(addr, time.Now())
	done := make(chan error, 1)
	if err := nd.Do(func() {
		f, ok := nd.Mail().User(addr).Folder("INBOX")
		if !ok {
			done <- errors.New("no INBOX")
			return
		}
		f.Append([]byte(msg), nil, time.Now().UnixMicro(), func(_ uint32, err error) { done <- err })
	}); err != nil {
		return err
	}
	if err := <-done; err != nil {
		return fmt.Errorf("demo: welcome message for %s: %w", addr, err)
	}
	return nil
}

// Users lists the demo users.
func (c *Community) Users() []User {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]User(nil), c.users...)
}

// CheckMail proves every user can send and receive: each user sends one
// message by SMTP to the next, and each waits, over IMAP, until it has
// arrived.
func (c *Community) CheckMail(ctx context.Context, timeout time.Duration) error {
	us := c.Users()
	if len(us) < 2 {
		return nil
	}
	subject := func(from User) string { return "hello from " + from.Address }
	for i, u := range us {
		to := us[(i+1)%len(us)]
		msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\n\r\nIt works.\r\n", u.Address, to.Address, subject(u), time.Now().Format(time.RFC1123Z))
		auth := smtp.PlainAuth("", u.Address, u.Password, "127.0.0.1")
		if err := smtp.SendMail(u.SMTP, auth, u.Address, []string{to.Address}, []byte(msg)); err != nil {
			return fmt.Errorf("demo: %s sending to %s: %w", u.Address, to.Address, err)
		}
	}
	deadline := time.Now().Add(timeout)
	for i, u := range us {
		from := us[(i+len(us)-1)%len(us)]
		if err := poll(ctx, deadline, 200*time.Millisecond, func() bool { return hasSubject(u, subject(from)) }); err != nil {
			return fmt.Errorf("demo: %s did not receive the message from %s over IMAP: %w", u.Address, from.Address, err)
		}
	}
	return nil
}

// hasSubject logs in over IMAP and looks for a message with subject in
// INBOX.
func hasSubject(u User, subject string) bool {
	conn, err := net.DialTimeout("tcp", u.IMAP, 5*time.Second)
	if err != nil {
		return false
	}
	cl := imapclient.New(conn, nil)
	defer cl.Close()
	if err := cl.Login(u.Address, u.Password).Wait(); err != nil {
		return false
	}
	if _, err := cl.Select("INBOX", nil).Wait(); err != nil {
		return false
	}
	data, err := cl.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: subject}}}, nil).Wait()
	return err == nil && len(data.AllUIDs()) > 0
}
