package node

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/post"
	"github.com/epost-mail/epost/internal/store"
)

// msgCount is a log handler that counts records by message.
type msgCount struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *msgCount) Enabled(context.Context, slog.Level) bool { return true }
func (c *msgCount) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[r.Message]++
	return nil
}
func (c *msgCount) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *msgCount) WithGroup(string) slog.Handler      { return c }

// count is how many records had a message containing part.
func (c *msgCount) count(part string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	total := 0
	for m, k := range c.n {
		if strings.Contains(m, part) {
			total += k
		}
	}
	return total
}

// addUser has nd serve a new user and waits until the mailbox is loaded.
func (r *storageRing) addUser(t *testing.T, nd *Node, src *seq, addr string) (identity.UserKeys, *identity.UserCert) {
	t.Helper()
	keys, cert, err := r.ca.NewUser(src, addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := nd.AddUser(keys, cert, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	return keys, cert
}

// await runs start on nd's loop and waits for the error it reports.
func await(t *testing.T, nd *Node, start func(done func(error))) error {
	t.Helper()
	ch := make(chan error, 1)
	if err := nd.Do(func() { start(func(err error) { ch <- err }) }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ch:
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("no answer from POST")
	}
	return nil
}

// TestDiskFaultsAndQuotaOnStatus: a run of failed disk writes is logged
// once (and its end once), counted on the status page and in /metrics;
// mail on a full disk is refused with an error matching store.ErrFull,
// and works again once there is room; each user's usage and quota are
// shown, and APPEND past the quota fails with post.ErrOverQuota.
func TestDiskFaultsAndQuotaOnStatus(t *testing.T) {
	faults := &store.Faults{}
	const quota = 5000
	logged := &msgCount{n: map[string]int{}}
	r := newStorageRingWith(t, 1, func(c *Config) {
		c.Log = slog.New(logged)
		c.Store = store.DefaultConfig()
		c.Store.Faults = faults
		c.Post = post.DefaultConfig()
		c.Post.Quota = quota
	})
	waitFor(t, "ring settled", 60*time.Second, r.settled)
	nd := r.nodes[0]
	const ann = "ann@quota.epost"
	r.addUser(t, nd, &seq{n: 9000}, ann)
	appendMsg := func(msg string) error {
		return await(t, nd, func(done func(error)) {
			f, _ := nd.Mail().User(ann).Folder("Drafts")
			f.Append([]byte(msg), nil, 0, func(_ uint32, err error) { done(err) })
		})
	}
	usage := func() (u int64) {
		if err := nd.Do(func() { u = nd.Mail().User(ann).Usage() }); err != nil {
			t.Fatal(err)
		}
		return u
	}

	faults.Fail(syscall.ENOSPC)
	if err := appendMsg("Subject: on a full disk\r\n\r\nrefused\r\n"); !errors.Is(err, store.ErrFull) {
		t.Fatalf("APPEND on a full disk: %v, want store.ErrFull", err)
	}
	send := func() error {
		return await(t, nd, func(done func(error)) {
			nd.Mail().Send(ann, []string{ann}, []byte("Subject: x\r\n\r\nto self\r\n"), done)
		})
	}
	if err := send(); !errors.Is(err, store.ErrFull) {
		t.Fatalf("send on a full disk: %v, want store.ErrFull", err)
	}
	faults.Fail(nil)
	msg := "Subject: room again\r\n\r\nstored\r\n"
	if err := appendMsg(msg); err != nil {
		t.Fatalf("APPEND once there is room: %v", err)
	}
	if got := usage(); got != int64(len(msg)) {
		t.Fatalf("usage %d, want %d", got, len(msg))
	}
	big := strings.Repeat("x", quota)
	if err := appendMsg(big); !errors.Is(err, post.ErrOverQuota) {
		t.Fatalf("APPEND past the quota: %v, want post.ErrOverQuota", err)
	}

	s := nd.Status()
	if s.Storage.WriteErrors < 2 {
		t.Errorf("write errors %d, want at least 2", s.Storage.WriteErrors)
	}
	if want := []MailboxUse{{User: ann, Bytes: int64(len(msg)), Quota: quota}}; len(s.Storage.Mailboxes) != 1 || s.Storage.Mailboxes[0] != want[0] {
		t.Errorf("mailboxes %+v, want %+v", s.Storage.Mailboxes, want)
	}
	failing, back := logged.count("disk writes failing"), logged.count("disk writes succeed again")
	if failing != 1 || back != 1 {
		t.Errorf("logged %d starts and %d ends of the failure, want 1 each", failing, back)
	}
	if !slices.ContainsFunc(s.Events, func(e Event) bool { return strings.Contains(e.Msg, "disk writes succeed again") }) {
		t.Errorf("the status page's events lack the end of the failure: %+v", s.Events)
	}

	b := scrape(t, r.nodes)
	short := nd.ID().Short()
	for _, want := range []string{
		`epost_store_write_errors_total{node="` + short + `"} `,
		`epost_mail_user_bytes{node="` + short + `",user="` + ann + `"} ` + strconv.Itoa(len(msg)),
		`epost_mail_user_quota_bytes{node="` + short + `",user="` + ann + `"} 5000`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q:\n%s", want, b)
		}
	}
}
