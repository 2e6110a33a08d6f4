package post

import (
	"bytes"
	"net/mail"
	"slices"
	"strings"
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
	"github.com/epost-mail/epost/internal/wire/wiretest"
)

// Fuzz targets for everything that reads bytes from the network or from
// storage. Each must never panic, and must accept only what the honest
// side could have produced. Like identity's targets, the notification
// target also runs each input as the inner plaintext behind a valid
// node signature and valid encryption, so the decoding behind those
// checks is fuzzed too.

func FuzzOpenSealed(f *testing.F) {
	c := testCommunity(f)
	bk := c.m("bob").keys
	n := c.mail(f, "alice", bob, carol)
	s := c.seal(f, n, "bob", "alice")
	f.Add(s.Encode())
	f.Add(wire.MustMarshal(n))
	f.Add(c.seal(f, c.mail(f, "carol", bob), "bob", "carol").Encode())
	f.Add([]byte{})
	f.Add([]byte{0x86, 0x01, 0x60, 0x40, 0x40, 0x40, 0x40})
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(s *Sealed) {
			got, err := s.Open(bk, c.v)
			if err != nil {
				return
			}
			if s.Recipient != bob || !slices.Contains(got.Recipients, bob) || got.check() != nil {
				t.Fatalf("opened a notification not for bob: %+v", got)
			}
		}
		if d, err := DecodeSealed(b); err == nil {
			if !bytes.Equal(d.Encode(), b) {
				t.Fatal("decoded a non-canonical encoding")
			}
			_ = d.VerifyNode(c.v)
			check(d)
		}
		if len(b) <= maxNotification {
			check(forge(t, env.NewRand(uint64(len(b)), 1), b, bk.Sealing.Recipient(), bob, c.m("alice")))
		}
	})
}

func FuzzDecodeRelease(f *testing.F) {
	c := testCommunity(f)
	bm := c.m("bob")
	s := c.seal(f, c.mail(f, "alice", bob), "bob", "alice")
	rel := SignRelease(bm.keys, s.Key())
	f.Add(rel.Encode())
	f.Add(SignRelease(c.m("carol").keys, s.Key()).Encode())
	f.Add([]byte{0x84, 0x01, 0x60, 0x40, 0x40})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRelease(b)
		if err != nil {
			return
		}
		if !bytes.Equal(r.Encode(), b) {
			t.Fatal("decoded a non-canonical encoding")
		}
		if r.Verify(bm.cert) == nil && s.VerifyRelease(r, bm.cert.Bytes(), c.v) == nil && !bytes.Equal(b, rel.Encode()) {
			// Ed25519 signatures are not malleable: only the one release
			// there is can verify.
			t.Fatalf("accepted a release bob never signed: %+v", r)
		}
	})
}

// FuzzOpenBody splits the input into chunks (the first byte says how
// many) and opens them twice: against a genuine ref, where they must
// fail unless they are the genuine chunks, and against a ref that names
// them, with a size from the input, so that the AEAD sees them.
func FuzzOpenBody(f *testing.F) {
	key := ConvergentKey([]byte("fuzz"))
	plain := bytes.Repeat([]byte("0123456789"), 10)
	chunks, ref := SealBody(key, plain, 40)
	f.Add(append([]byte{byte(len(chunks))}, slices.Concat(chunks...)...), int64(len(plain)))
	f.Add([]byte{1}, int64(0))
	f.Add([]byte{0, 1, 2}, int64(-1))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		if len(b) == 0 {
			_, _ = OpenBody(BodyRef{Size: size}, nil)
			return
		}
		n, rest := int(b[0])%8, b[1:]
		cs := make([][]byte, n)
		for i := range cs {
			k := len(rest) / (n - i)
			cs[i], rest = rest[:k], rest[k:]
		}
		if got, err := OpenBody(ref, cs); err == nil && !bytes.Equal(got, plain) {
			t.Fatal("genuine ref opened to something else")
		}
		named := BodyRef{Key: key, Size: size}
		for _, c := range cs {
			named.Chunks = append(named.Chunks, object.ImmutableKey(c))
		}
		if got, err := OpenBody(named, cs); err == nil && (int64(len(got)) != size || !bytes.Equal(got, plain)) {
			// Only the chunks sealed under key open, and they hold plain.
			t.Fatalf("opened %d bytes that were never sealed", len(got))
		}
	})
}

func FuzzOpenEntry(f *testing.F) {
	k := DeriveLogKey(testCommunity(f).m("alice").keys)
	entry := SealEntry(env.NewRand(1, 1), k, []byte("append INBOX 1"))
	f.Add(entry)
	f.Add(entry[:40])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := OpenEntry(k, b)
		if err == nil && !bytes.Equal(b, entry) {
			t.Fatalf("opened an entry never sealed: %q", got)
		}
	})
}

// FuzzAgeSeal checks the deterministic age encoder against age's decoder
// for any plaintext and randomness.
func FuzzAgeSeal(f *testing.F) {
	bk := testCommunity(f).m("bob").keys
	f.Add([]byte("hello"), uint64(1))
	f.Add([]byte{}, uint64(2))
	f.Fuzz(func(t *testing.T, plain []byte, seed uint64) {
		payload, err := ageSeal(env.NewRand(seed, 3), bk.Sealing.Recipient(), plain)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ageOpen(payload, bk.Sealing.AgeIdentity())
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("age does not open our encoding: %v", err)
		}
	})
}

// FuzzCheckRelease: a replica accepts the release of a pending entry
// only with the recipient's own signed release and certificate.
func FuzzCheckRelease(f *testing.F) {
	c := testCommunity(f)
	bm := c.m("bob")
	s := c.seal(f, c.mail(f, "alice", bob), "bob", "alice")
	rel := SignRelease(bm.keys, s.Key()).Encode()
	f.Add(wire.MustMarshal(releaseProof{Release: rel, Cert: bm.cert.Bytes()}))
	f.Add(wire.MustMarshal(releaseProof{Release: rel, Cert: c.m("carol").cert.Bytes()}))
	f.Add(wire.MustMarshal(releaseProof{}))
	p := &Policy{Verifier: c.v}
	set := PendingKey(bm.cert.UserID)
	f.Fuzz(func(t *testing.T, b []byte) {
		rp, ok := wiretest.RoundTrip[releaseProof](t, b)
		if p.CheckRelease(set, s.Key(), b) == nil && (!ok || !bytes.Equal(rp.Release, rel)) {
			t.Fatalf("accepted a release bob never signed: %x", b)
		}
	})
}

// FuzzLogRecords decodes the input as each record of a mailbox's log:
// each must round-trip, and a log entry's operations, applied to a
// folder, leave a state that its snapshot restores exactly.
func FuzzLogRecords(f *testing.F) {
	m := &Message{UID: 3, ID: [16]byte{1}, Body: BodyRef{Size: 10, Chunks: []object.Key{{2}}}, Date: 1e15, Flags: []string{"\\Seen"}}
	f.Add(wire.MustMarshal(entry{Prev: [32]byte{9}, Seq: 2, Ops: []Op{
		{Kind: OpAppend, Msg: m}, {Kind: OpFlags, UID: 3, Flags: []string{"$Junk", "\\Seen"}, Add: true}, {Kind: OpExpunge, UID: 1},
	}}))
	f.Add(wire.MustMarshal(entry{Seq: 1, Ops: []Op{{Kind: OpSnapshot, Snap: &Snapshot{NextUID: 5, Msgs: []*Message{m, nil}}}}}))
	f.Add(wire.MustMarshal(entry{Prev: [32]byte{8}, Seq: 7, Ops: []Op{
		{Kind: OpExpunge, UID: 3}, {Kind: OpAppend, Msg: m}, {Kind: OpUIDNext, UID: 9}, {Kind: OpMerged, Flags: []string{"00ff"}},
	}}))
	f.Add(wire.MustMarshal(headData{Last: [32]byte{1}, Seq: 4}))
	f.Add(wire.MustMarshal(rootRecord{Folders: []folderInfo{{Name: "INBOX", ID: [16]byte{1}, UIDValidity: 1}}, Writer: [16]byte{2}}))
	f.Add(wire.MustMarshal(localRoot{Version: 2, Sealed: []byte("sealed")}))
	folder := func() *Folder {
		return (&Account{delivered: map[[16]byte]bool{}, bodies: map[object.Key]int{}}).newFolder(folderInfo{Name: "INBOX"})
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		wiretest.RoundTrip[headData](t, b)
		wiretest.RoundTrip[rootRecord](t, b)
		wiretest.RoundTrip[localRoot](t, b)
		if r, err := decodeRoot(b); err == nil {
			mergeRoots(r, r)
		}
		wiretest.RoundTrip[snapPart](t, b)
		e, ok := wiretest.RoundTrip[entry](t, b)
		if !ok {
			return
		}
		x := folder()
		for _, op := range e.Ops {
			x.apply(op)
		}
		// A merge replays logs without an account: the same state.
		z := replayState([]entry{e})
		if !sameState(z, folderState{msgs: x.msgs, nextUID: x.nextUID}) {
			t.Fatalf("a merge replays the entry to %s, the folder to %s", describe(z), describe(folderState{msgs: x.msgs, nextUID: x.nextUID}))
		}
		mergedHeads(e)
		y := folder()
		y.apply(Op{Kind: OpSnapshot, Snap: x.snapshot()})
		if !slices.EqualFunc(x.Messages(), y.Messages(), func(a, b *Message) bool {
			return bytes.Equal(wire.MustMarshal(a), wire.MustMarshal(b))
		}) || y.nextUID != max(x.nextUID, 1) {
			t.Fatal("the snapshot does not restore the folder")
		}
	})
}

// FuzzHeaders: the header fields POST acts on. The junk verdict is the
// first X-Epost-Junk field's (the gateway's, which it puts first), and
// the From address that lets a message through without the
// sender-mismatch flag must be the one address a mail client reads
// there.
func FuzzHeaders(f *testing.F) {
	f.Add([]byte("From: Alice <alice@lab.example.org>\r\nSubject: hi\r\n\r\nbody\r\n"))
	f.Add([]byte("From: alice@lab.example.org\nX-Epost-Junk: yes\n\n"))
	f.Add([]byte("From: =?utf-8?q?Al=C3=AFce?=\r\n <alice@lab.example.org>\r\n\r\n"))
	f.Add([]byte("From: =?windows-1252?q?Al=EFce?= <alice@lab.example.org>\r\n\r\n"))
	f.Add([]byte("Subject: no from\r\n\r\nFrom: body@example.org\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		if !isJunk(append([]byte(JunkHeader+": yes 9.5\r\n"), msg...)) || isJunk(append([]byte(JunkHeader+": no\r\n"), msg...)) {
			t.Fatalf("the first %s does not decide", JunkHeader)
		}
		from := headerFrom(msg)
		if _, err := identity.CanonicalAddress(from); err != nil {
			return // matches no sender: the message is flagged
		}
		// (A CR ending the message ends its last line for POST; net/mail
		// would keep it in the value.)
		m, err := mail.ReadMessage(bytes.NewReader(bytes.TrimSuffix(msg, []byte("\r"))))
		if err != nil {
			return // a header net/mail refuses: no second reading to compare with
		}
		list, err := fromParser.ParseList(m.Header.Get("From"))
		if err != nil || len(list) != 1 || !strings.EqualFold(list[0].Address, from) {
			t.Fatalf("From %q, but a mail client reads %v, %v", from, list, err)
		}
	})
}
