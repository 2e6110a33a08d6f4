package imapd

// Unit tests: no network, no nodes. The runtime is a fake event loop (a
// goroutine running funcs one at a time) and connections are net.Pipe
// pairs handed to the server through an in-memory listener.

import (
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/epost-mail/epost/internal/post"
)

// fakeLoop runs posted funcs serially on one goroutine, like node.Loop.
type fakeLoop struct {
	funcs chan func()
	stop  chan struct{}
	once  sync.Once
}

func newFakeLoop() *fakeLoop {
	l := &fakeLoop{funcs: make(chan func()), stop: make(chan struct{})}
	go func() {
		for {
			select {
			case f := <-l.funcs:
				f()
			case <-l.stop:
				return
			}
		}
	}()
	return l
}

var errStopped = errors.New("fake loop stopped")

func (l *fakeLoop) Do(f func()) error {
	done := make(chan struct{})
	select {
	case l.funcs <- func() { f(); close(done) }:
	case <-l.stop:
		return errStopped
	}
	<-done
	return nil
}

func (l *fakeLoop) Close() { l.once.Do(func() { close(l.stop) }) }

// pipeListener is an in-memory net.Listener.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial() net.Conn {
	c, s := net.Pipe()
	l.conns <- s
	return c
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

type oneUser struct{}

func (oneUser) Check(u, p string) (string, bool) { return u, u == "alice@example.org" && p == "pw" }

// TestWithoutPOST: a node without a mail store (or whose loop stopped)
// answers NO [UNAVAILABLE], never OK, and wrong passwords fail.
func TestWithoutPOST(t *testing.T) {
	loop := newFakeLoop()
	defer loop.Close()
	s := New(Config{Loop: loop, Mail: func() *post.Post { return nil }, Auth: oneUser{}, InsecureAuth: true, Timeout: time.Second})
	ln := newPipeListener()
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve after Close: %v", err)
		}
	}()

	cl := imapclient.New(ln.dial(), nil)
	defer cl.Close()
	caps, err := cl.Capability().Wait()
	if err != nil || !caps.Has(imap.CapIMAP4rev2) || !caps.Has(imap.Cap("AUTH=PLAIN")) {
		t.Fatalf("CAPABILITY: %v, %v", caps, err)
	}
	err = cl.Login("alice@example.org", "bad").Wait()
	var ierr *imap.Error
	if !errors.As(err, &ierr) || ierr.Code != imap.ResponseCodeAuthenticationFailed {
		t.Fatalf("wrong password: %v", err)
	}
	err = cl.Login("alice@example.org", "pw").Wait()
	if !errors.As(err, &ierr) || ierr.Code != imap.ResponseCodeUnavailable {
		t.Fatalf("login without POST: %v", err)
	}
	loop.Close()
	err = cl.Login("alice@example.org", "pw").Wait()
	if !errors.As(err, &ierr) || ierr.Code != imap.ResponseCodeUnavailable {
		t.Fatalf("login with the loop stopped: %v", err)
	}
}

func TestStaticSets(t *testing.T) {
	sel := &selected{uids: []uint32{3, 5, 9, 10}}
	for _, tc := range []struct {
		set  imap.NumSet
		want []item
	}{
		{imap.SeqSet{{Start: 2, Stop: 0}}, []item{{2, 5}, {3, 9}, {4, 10}}},
		{imap.SeqSet{{Start: 0, Stop: 0}}, []item{{4, 10}}},
		{imap.SeqSet{{Start: 7, Stop: 0}}, []item{{4, 10}}}, // 7:* is *:7
		{imap.UIDSet{{Start: 4, Stop: 9}}, []item{{2, 5}, {3, 9}}},
		{imap.UIDSet{{Start: 11, Stop: 0}}, []item{{4, 10}}}, // RFC 9051 section 6.4.8
		{imap.UIDSetNum(1, 2), nil},
	} {
		if got := sel.resolve(tc.set); !slices.Equal(got, tc.want) {
			t.Errorf("resolve(%v) = %v, want %v", tc.set, got, tc.want)
		}
	}
	sel.searchRes = imap.UIDSetNum(9)
	if got := sel.resolve(imap.SearchRes()); !slices.Equal(got, []item{{3, 9}}) {
		t.Errorf("resolve($) = %v", got)
	}
	empty := &selected{}
	if got := empty.resolve(imap.SeqSet{{Start: 1, Stop: 0}}); len(got) != 0 {
		t.Errorf("1:* in an empty folder = %v", got)
	}
}

type expunges []uint32

func (e *expunges) WriteExpunge(n uint32) error { *e = append(*e, n); return nil }

// TestForget: expunges are reported highest first, so each sequence
// number is right when it is sent (RFC 9051 section 7.5.1).
func TestForget(t *testing.T) {
	sel := &selected{uids: []uint32{1, 2, 3, 4, 5}, flags: map[uint32][]imap.Flag{}}
	var got expunges
	if err := sel.forget(&got, []uint32{2, 4, 7}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, expunges{4, 2}) || !slices.Equal(sel.uids, []uint32{1, 3, 5}) {
		t.Fatalf("expunged %v, left %v", got, sel.uids)
	}
}

func TestFlags(t *testing.T) {
	got := postFlags([]imap.Flag{`\SEEN`, "$Label", `\seen`, `\Recent`, `\flagged`})
	if want := []string{"$Label", `\Flagged`, `\Seen`}; !slices.Equal(got, want) {
		t.Errorf("postFlags = %q, want %q", got, want)
	}
	if !sameFlags([]imap.Flag{`\Seen`}, []string{`\Seen`}) || sameFlags(nil, []string{`\Seen`}) {
		t.Error("sameFlags")
	}
	for in, want := range map[string]string{"inbox": "INBOX", "InBox": "INBOX", "a/b/": "a/b", "Sent": "Sent"} {
		if got := canonicalName(in); got != want {
			t.Errorf("canonicalName(%q) = %q, want %q", in, got, want)
		}
	}
	names := []string{"A", "A/b", "Ab", "B"}
	if !hasChildren(names, "A") || hasChildren(names, "Ab") || hasChildren(names, "B") {
		t.Error("hasChildren")
	}
}

func TestMatch(t *testing.T) {
	body := []byte("From: Bob <bob@example.org>\r\nSubject: Quarterly report\r\nDate: Tue, 03 Mar 2026 10:00:00 +0000\r\n" +
		"Content-Type: multipart/alternative; boundary=xx\r\n\r\n--xx\r\nContent-Type: text/plain\r\n\r\nNumbers are UP\r\n" +
		"--xx\r\nContent-Type: image/png\r\n\r\nsecretword\r\n--xx--\r\n")
	l := &loaded{item: item{seq: 2, uid: 7}, ok: true, body: body, msg: post.Message{UID: 7,
		Date: time.Date(2026, 3, 5, 23, 0, 0, 0, time.UTC).UnixMicro(), Flags: []string{`\Seen`, "work"}}}
	day := func(d int) time.Time { return time.Date(2026, 3, d, 0, 0, 0, 0, time.UTC) }
	for _, tc := range []struct {
		name string
		c    imap.SearchCriteria
		want bool
	}{
		{"all", imap.SearchCriteria{}, true},
		{"seq", imap.SearchCriteria{SeqNum: []imap.SeqSet{imap.SeqSetNum(1)}}, false},
		{"uid", imap.SearchCriteria{UID: []imap.UIDSet{imap.UIDSetNum(7)}}, true},
		{"flag case", imap.SearchCriteria{Flag: []imap.Flag{`\seen`}}, true},
		{"keyword", imap.SearchCriteria{Flag: []imap.Flag{"work"}}, true},
		{"unflagged", imap.SearchCriteria{NotFlag: []imap.Flag{`\Flagged`}}, true},
		{"on", imap.SearchCriteria{Since: day(5), Before: day(6)}, true},
		{"before", imap.SearchCriteria{Before: day(5)}, false},
		{"sent on", imap.SearchCriteria{SentSince: day(3), SentBefore: day(4)}, true},
		{"subject", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "subject", Value: "QUARTERLY"}}}, true},
		{"has header", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Cc"}}}, false},
		{"body text part", imap.SearchCriteria{Body: []string{"numbers are up"}}, true},
		{"body skips images", imap.SearchCriteria{Body: []string{"secretword"}}, false},
		{"text has headers", imap.SearchCriteria{Text: []string{"bob@example"}}, true},
		{"larger", imap.SearchCriteria{Larger: int64(len(body))}, false},
		{"smaller", imap.SearchCriteria{Smaller: int64(len(body)) + 1}, true},
		{"not", imap.SearchCriteria{Not: []imap.SearchCriteria{{Flag: []imap.Flag{"work"}}}}, false},
		{"or", imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{{Flag: []imap.Flag{"x"}}, {UID: []imap.UIDSet{imap.UIDSetNum(7)}}}}}, true},
	} {
		if got := match(l, &tc.c); got != tc.want {
			t.Errorf("%s: match = %v, want %v", tc.name, got, tc.want)
		}
	}
	if needsBody(&imap.SearchCriteria{Flag: []imap.Flag{"x"}, Larger: 3}) ||
		!needsBody(&imap.SearchCriteria{Not: []imap.SearchCriteria{{Text: []string{"x"}}}}) {
		t.Error("needsBody")
	}
}

// TestBrokenMessages: headers and MIME that do not parse still give an
// answer, not a panic.
func TestBrokenMessages(t *testing.T) {
	for _, b := range []string{"", "no header at all", "Subject: x\r\nContent-Type: multipart/mixed\r\n\r\n--", "\x00\xff: \r\n\r\n"} {
		l := &loaded{ok: true, body: []byte(b)}
		match(l, &imap.SearchCriteria{Text: []string{"x"}, Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "a"}}})
		if env := envelope([]byte(b)); env == nil {
			t.Errorf("envelope(%q) = nil", b)
		}
	}
}

func TestBodySections(t *testing.T) {
	msg := []byte("Subject:no space\r\n\tfolded\r\nX-A: 1\r\n\r\nline one\r\n\r\nline two\r\n")
	header, text := splitHeader(msg)
	if string(header) != "Subject:no space\r\n\tfolded\r\nX-A: 1\r\n\r\n" || string(text) != "line one\r\n\r\nline two\r\n" {
		t.Fatalf("splitHeader: %q | %q", header, text)
	}
	if h, b := splitHeader([]byte("only: header\n")); string(h) != "only: header\n" || len(b) != 0 {
		t.Errorf("no blank line: %q | %q", h, b)
	}
	if h, b := splitHeader([]byte("\r\nbody")); string(h) != "\r\n" || string(b) != "body" {
		t.Errorf("empty header: %q | %q", h, b)
	}
	for _, tc := range []struct {
		item *imap.FetchItemBodySection
		want string
	}{
		{&imap.FetchItemBodySection{}, string(msg)}, // as stored, not re-serialised
		{&imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader}, string(header)},
		{&imap.FetchItemBodySection{Specifier: imap.PartSpecifierText}, string(text)},
		{&imap.FetchItemBodySection{Partial: &imap.SectionPartial{Offset: 8, Size: 2}}, "no"},
		{&imap.FetchItemBodySection{Partial: &imap.SectionPartial{Offset: 1000, Size: 2}}, ""},
		{&imap.FetchItemBodySection{Specifier: imap.PartSpecifierText, Partial: &imap.SectionPartial{Offset: 10, Size: 100}}, "\r\nline two\r\n"},
		{&imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"x-a"}}, "X-A: 1\r\n\r\n"},
	} {
		if got := string(bodySection(msg, tc.item)); got != tc.want {
			t.Errorf("bodySection(%+v) = %q, want %q", tc.item, got, tc.want)
		}
	}
}

func TestValidBodyStructure(t *testing.T) {
	bs := validBodyStructure(&imap.BodyStructureMultiPart{Subtype: "mixed"}).(*imap.BodyStructureMultiPart)
	if len(bs.Children) != 1 {
		t.Fatalf("empty multipart kept no parts: %+v", bs)
	}
}
