package post

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// member is a user with the node they run.
type member struct {
	keys     identity.UserKeys
	cert     *identity.UserCert
	nodeKey  identity.NodeKey
	nodeCert *identity.NodeCert
}

// community is a CA with its members, built from a fixed seed.
type community struct {
	rnd     env.Rand
	ca      *identity.CA
	v       *identity.Verifier
	members map[string]*member
}

func newCommunity(t testing.TB, seed uint64, addrs ...string) *community {
	t.Helper()
	c := &community{rnd: env.NewRand(seed, 99), members: map[string]*member{}}
	var err error
	if c.ca, err = identity.NewCA(c.rnd); err != nil {
		t.Fatal(err)
	}
	c.v = identity.NewVerifier(c.ca.Public())
	for _, a := range addrs {
		m := &member{}
		if m.keys, err = identity.GenerateUserKeys(c.rnd, a); err != nil {
			t.Fatal(err)
		}
		if m.cert, err = c.ca.IssueUser(c.rnd, m.keys.Address, m.keys.Signing.Public(), m.keys.Sealing.Recipient()); err != nil {
			t.Fatal(err)
		}
		if m.nodeKey, err = identity.GenerateNodeKey(c.rnd); err != nil {
			t.Fatal(err)
		}
		if m.nodeCert, err = c.ca.IssueNode(c.rnd, m.nodeKey.Public()); err != nil {
			t.Fatal(err)
		}
		c.members[strings.SplitN(a, "@", 2)[0]] = m
	}
	return c
}

const (
	alice = "alice@lab.example.org"
	bob   = "bob@lab.example.org"
	carol = "carol@lab.example.org"
)

func testCommunity(t testing.TB) *community { return newCommunity(t, 1, alice, bob, carol) }

func (c *community) m(name string) *member { return c.members[name] }

// mail has from sign a notification of a small body to the recipients.
func (c *community) mail(t testing.TB, from string, to ...string) *Notification {
	t.Helper()
	key, err := NewContentKey(c.rnd)
	if err != nil {
		t.Fatal(err)
	}
	_, ref := SealBody(key, []byte("Subject: hi\r\n\r\nhello"), 0)
	f := c.m(from)
	n, err := SignNotification(c.rnd, f.keys, f.cert, to, ref, false)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// seal has node's member seal n to the recipient named to.
func (c *community) seal(t testing.TB, n *Notification, to, node string) *Sealed {
	t.Helper()
	s, err := Seal(c.rnd, n, c.m(to).cert, c.m(node).nodeKey, c.m(node).nodeCert)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// forge builds what a misbehaving node could: any plaintext, sealed to
// rcpt's key, labelled for recipient, with a valid signature by node.
func forge(t testing.TB, r io.Reader, plain []byte, rcpt identity.SealingRecipient, recipient string, node *member) *Sealed {
	t.Helper()
	payload, err := ageSeal(r, rcpt, plain)
	if err != nil {
		t.Fatal(err)
	}
	return nodeSign(&Sealed{Version: Version, Recipient: recipient, Payload: payload}, node)
}

// nodeSign (re)signs s as node's.
func nodeSign(s *Sealed, node *member) *Sealed {
	s.Node, s.NodeCert = node.nodeCert.NodeID, node.nodeCert.Bytes()
	s.Sig = node.nodeKey.Sign(labelSealed, s.body())
	return s
}

func wantErr(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
}

func TestNotificationRoundTrip(t *testing.T) {
	c := testCommunity(t)
	n := c.mail(t, "alice", " Bob@Lab.Example.ORG", carol)
	if !slices.Equal(n.Recipients, []string{bob, carol}) || n.Sender != alice {
		t.Fatalf("recipients %q sender %q: not canonical", n.Recipients, n.Sender)
	}
	for _, to := range []string{"bob", "carol"} {
		s := c.seal(t, n, to, "alice")
		b := s.Encode()
		d, err := DecodeSealed(b)
		if err != nil {
			t.Fatal(err)
		}
		if d.Key() != object.ImmutableKey(b) || d.Key() != s.Key() {
			t.Fatal("Key is not SHA-256 of the encoding")
		}
		if err := d.VerifyNode(c.v); err != nil {
			t.Fatal(err)
		}
		got, err := d.Open(c.m(to).keys, c.v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(wire.MustMarshal(got), wire.MustMarshal(n)) {
			t.Fatalf("%s opened\n%+v\nwant\n%+v", to, got, n)
		}
		// The payload is a standard age file: age itself opens it.
		rd, err := age.Decrypt(bytes.NewReader(s.Payload), c.m(to).keys.Sealing.AgeIdentity())
		if err != nil {
			t.Fatal(err)
		}
		if plain, _ := io.ReadAll(rd); !bytes.Equal(plain, wire.MustMarshal(n)) {
			t.Fatal("age opens the payload to something else")
		}
	}
}

func TestSealIsAFunctionOfTheReader(t *testing.T) {
	c := testCommunity(t)
	n := c.mail(t, "alice", bob)
	a := c.m("alice")
	s1, err := Seal(env.NewRand(5, 5), n, c.m("bob").cert, a.nodeKey, a.nodeCert)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := Seal(env.NewRand(5, 5), n, c.m("bob").cert, a.nodeKey, a.nodeCert)
	s3, _ := Seal(env.NewRand(5, 6), n, c.m("bob").cert, a.nodeKey, a.nodeCert)
	if s1.Key() != s2.Key() {
		t.Fatal("same reader, different sealed notifications: simulations would not replay")
	}
	if s1.Key() == s3.Key() || bytes.Equal(s1.Payload, s3.Payload) {
		t.Fatal("different readers, same payload")
	}
}

// TestAgeSealInterop checks the age encoder against age's decoder at the
// STREAM chunk boundaries, and that Open takes payloads made by age's own
// encoder.
func TestAgeSealInterop(t *testing.T) {
	c := testCommunity(t)
	bk := c.m("bob").keys
	for _, size := range []int{0, 1, ageChunkSize - 1, ageChunkSize, ageChunkSize + 1, 2 * ageChunkSize, 3*ageChunkSize + 7} {
		plain := make([]byte, size)
		c.rnd.Read(plain)
		payload, err := ageSeal(c.rnd, bk.Sealing.Recipient(), plain)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ageOpen(payload, bk.Sealing.AgeIdentity())
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("size %d: round trip differs", size)
		}
	}

	n := c.mail(t, "alice", bob)
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, bk.Sealing.Recipient().AgeRecipient())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(wire.MustMarshal(n))
	w.Close()
	s := nodeSign(&Sealed{Version: Version, Recipient: bob, Payload: buf.Bytes()}, c.m("alice"))
	if _, err := s.Open(bk, c.v); err != nil {
		t.Fatalf("payload from age.Encrypt: %v", err)
	}
}

func TestStoringNodeCannotOpen(t *testing.T) {
	c := testCommunity(t)
	n := c.mail(t, "alice", bob)
	s := c.seal(t, n, "bob", "alice")
	// The payload shows nothing of the notification in the clear.
	for _, secret := range [][]byte{n.Body.Key[:], n.Body.Chunks[0][:], []byte(alice), n.ID[:]} {
		if bytes.Contains(s.Encode(), secret) {
			t.Fatalf("sealed notification contains %x in the clear", secret)
		}
	}
	// Carol's node stores it: with Carol's keys, relabelled as hers, the
	// payload does not open.
	relabelled := nodeSign(&Sealed{Version: Version, Recipient: carol, Payload: s.Payload}, c.m("carol"))
	_, err := relabelled.Open(c.m("carol").keys, c.v)
	wantErr(t, err, ErrNotForMe)
}

func TestOpenChecksTheRecipient(t *testing.T) {
	c := testCommunity(t)
	n := c.mail(t, "alice", bob, carol)
	s := c.seal(t, n, "bob", "alice")
	_, err := s.Open(c.m("carol").keys, c.v)
	wantErr(t, err, ErrNotForMe)
	_, err = s.Open(c.m("alice").keys, c.v)
	wantErr(t, err, ErrNotForMe)
}

// TestOpenAfterRotation: a notification sealed to Bob's old key before
// his keys rotated (the sender had his old certificate) still opens with
// the rotated keys, and so does one sealed to the new key; the old keys
// alone do not open the new one.
func TestOpenAfterRotation(t *testing.T) {
	c := testCommunity(t)
	bobOld := *c.m("bob")
	beforeRotation := c.seal(t, c.mail(t, "alice", bob), "bob", "alice")
	rotated, err := bobOld.keys.Rotate(c.rnd)
	if err != nil {
		t.Fatal(err)
	}
	b := c.m("bob")
	b.keys = rotated
	if b.cert, err = c.ca.IssueUser(c.rnd, bob, rotated.Signing.Public(), rotated.Sealing.Recipient()); err != nil {
		t.Fatal(err)
	}
	afterRotation := c.seal(t, c.mail(t, "alice", bob), "bob", "alice")
	for _, s := range []*Sealed{beforeRotation, afterRotation} {
		if _, err := s.Open(rotated, c.v); err != nil {
			t.Fatal(err)
		}
	}
	_, err = afterRotation.Open(bobOld.keys, c.v)
	wantErr(t, err, ErrNotForMe)
}

// TestResealToThirdParty: Bob receives Alice's mail and has his node seal
// it to Carol, to make Carol believe Alice wrote to her.
func TestResealToThirdParty(t *testing.T) {
	c := testCommunity(t)
	n := c.mail(t, "alice", bob)
	got, err := c.seal(t, n, "bob", "alice").Open(c.m("bob").keys, c.v)
	if err != nil {
		t.Fatal(err)
	}
	// The honest API refuses.
	_, err = Seal(c.rnd, got, c.m("carol").cert, c.m("bob").nodeKey, c.m("bob").nodeCert)
	wantErr(t, err, ErrNotForMe)
	// Done by hand, Carol's Open catches it: she is not in Alice's list.
	re := forge(t, c.rnd, wire.MustMarshal(got), c.m("carol").keys.Sealing.Recipient(), carol, c.m("bob"))
	if err := re.VerifyNode(c.v); err != nil {
		t.Fatalf("a storing node cannot tell, and should accept it: %v", err)
	}
	_, err = re.Open(c.m("carol").keys, c.v)
	wantErr(t, err, ErrNotForMe)
	// Adding Carol to the list breaks Alice's signature.
	got.Recipients = append(got.Recipients, carol)
	re = forge(t, c.rnd, wire.MustMarshal(got), c.m("carol").keys.Sealing.Recipient(), carol, c.m("bob"))
	_, err = re.Open(c.m("carol").keys, c.v)
	wantErr(t, err, ErrForged)
}

func TestForeignCommunity(t *testing.T) {
	c := testCommunity(t)
	other := newCommunity(t, 2, "mallory@evil.example.org", bob)
	mal := other.m("mallory")

	// Mallory's notification, signed with a certificate of her CA, sealed
	// by a node of ours.
	n := other.mail(t, "mallory", bob)
	s := c.seal(t, n, "bob", "alice")
	if err := s.VerifyNode(c.v); err != nil {
		t.Fatal(err)
	}
	_, err := s.Open(c.m("bob").keys, c.v)
	wantErr(t, err, ErrForged)
	wantErr(t, err, identity.ErrWrongCA)

	// A node of the other CA.
	s, err = Seal(c.rnd, c.mail(t, "alice", bob), c.m("bob").cert, mal.nodeKey, mal.nodeCert)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.VerifyNode(c.v), ErrForged)
	_, err = s.Open(c.m("bob").keys, c.v)
	wantErr(t, err, ErrForged)

	// The other CA's "bob@lab.example.org" is not our Bob.
	n = other.mail(t, "bob", bob)
	_, err = c.seal(t, n, "bob", "alice").Open(c.m("bob").keys, c.v)
	wantErr(t, err, ErrForged)
}

func TestTamperedSealedBytes(t *testing.T) {
	c := testCommunity(t)
	s := c.seal(t, c.mail(t, "alice", bob), "bob", "alice")
	b := s.Encode()
	sigAt := bytes.Index(b, s.Sig)
	payloadAt := bytes.Index(b, s.Payload)
	for i := range b {
		for _, flip := range []byte{0x01, 0x80} {
			x := bytes.Clone(b)
			x[i] ^= flip
			d, err := DecodeSealed(x)
			if err != nil {
				wantErr(t, err, ErrMalformed)
				continue
			}
			if _, err := d.Open(c.m("bob").keys, c.v); err == nil {
				t.Fatalf("byte %d ^ %#x: tampered notification opened", i, flip)
			}
			verr := d.VerifyNode(c.v)
			if verr == nil {
				t.Fatalf("byte %d ^ %#x: storing node accepts a tampered notification", i, flip)
			}
			inSig := i >= sigAt && i < sigAt+len(s.Sig)
			inPayload := i >= payloadAt && i < payloadAt+len(s.Payload)
			if (inSig || inPayload) && !errors.Is(verr, ErrForged) {
				t.Fatalf("byte %d ^ %#x (sig %v, payload %v): %v, want ErrForged", i, flip, inSig, inPayload, verr)
			}
		}
	}
}

// TestTamperedInnerNotification: the sending node (who cannot read the
// notification) or anyone else alters the sender-signed part and seals
// it properly. Every single-byte change of the encoding, and each
// meaningful field change, must fail Open.
func TestTamperedInnerNotification(t *testing.T) {
	c := testCommunity(t)
	bk := c.m("bob").keys
	n := c.mail(t, "alice", bob, carol)
	open := func(plain []byte) error {
		_, err := forge(t, c.rnd, plain, bk.Sealing.Recipient(), bob, c.m("alice")).Open(bk, c.v)
		return err
	}
	if err := open(wire.MustMarshal(n)); err != nil {
		t.Fatal(err)
	}
	plain := wire.MustMarshal(n)
	for i := range plain {
		x := bytes.Clone(plain)
		x[i] ^= 0x01
		if err := open(x); err == nil {
			t.Fatalf("byte %d of the inner notification changed and Open accepted it", i)
		} else if !errors.Is(err, ErrForged) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("byte %d: %v, want ErrForged or ErrMalformed", i, err)
		}
	}

	edits := map[string]func(n *Notification){
		"sig":               func(n *Notification) { n.Sig[3] ^= 1 },
		"drop a recipient":  func(n *Notification) { n.Recipients = n.Recipients[:1] },
		"swap recipients":   func(n *Notification) { n.Recipients[0], n.Recipients[1] = n.Recipients[1], n.Recipients[0] },
		"add a recipient":   func(n *Notification) { n.Recipients = append(n.Recipients, "dave@lab.example.org") },
		"sender":            func(n *Notification) { n.Sender = carol },
		"sender cert":       func(n *Notification) { n.SenderCert = c.m("carol").cert.Bytes() },
		"gateway":           func(n *Notification) { n.Gateway = true },
		"id":                func(n *Notification) { n.ID[0] ^= 1 },
		"body key":          func(n *Notification) { n.Body.Key[0] ^= 1 },
		"body chunk":        func(n *Notification) { n.Body.Chunks[0][31] ^= 1 },
		"body size":         func(n *Notification) { n.Body.Size++ },
		"version":           func(n *Notification) { n.Version = 2 },
		"no sig":            func(n *Notification) { n.Sig = nil },
		"sender not canon.": func(n *Notification) { n.Sender = "Alice@lab.example.org" },
	}
	for name, edit := range edits {
		m := *n
		m.Recipients = slices.Clone(n.Recipients)
		m.Sig = bytes.Clone(n.Sig)
		m.Body.Chunks = slices.Clone(n.Body.Chunks)
		edit(&m)
		err := open(wire.MustMarshal(&m))
		if !errors.Is(err, ErrForged) && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrForged or ErrMalformed", name, err)
		}
	}
	// Control: the same kind of edit, signed by the sender it names,
	// opens; so the failures above are the checks at work.
	m := *n
	m.Sender, m.SenderCert = carol, c.m("carol").cert.Bytes()
	m.Sig = c.m("carol").keys.Signing.Sign(labelNotification, m.body())
	if err := open(wire.MustMarshal(&m)); err != nil {
		t.Fatalf("a genuinely signed notification: %v", err)
	}
}

func TestSignNotificationRefuses(t *testing.T) {
	c := testCommunity(t)
	a := c.m("alice")
	_, ref := SealBody(ContentKey{1}, []byte("x"), 0)
	many := func(k int) []string {
		out := make([]string, k)
		for i := range out {
			out[i] = fmt.Sprintf("user%d@lab.example.org", i)
		}
		return out
	}
	for name, tc := range map[string]struct {
		keys  identity.UserKeys
		rcpts []string
		ref   BodyRef
		want  error
	}{
		"no recipients":       {a.keys, nil, ref, ErrMalformed},
		"duplicate":           {a.keys, []string{bob, "BOB@lab.example.org"}, ref, ErrMalformed},
		"too many":            {a.keys, many(MaxRecipients + 1), ref, ErrMalformed},
		"bad address":         {a.keys, []string{"bob"}, ref, identity.ErrBadAddress},
		"empty body ref":      {a.keys, []string{bob}, BodyRef{}, ErrMalformed},
		"keys not the cert's": {c.m("bob").keys, []string{bob}, ref, identity.ErrKeyMismatch},
		"ref too large":       {a.keys, []string{bob}, BodyRef{Chunks: make([]object.Key, MaxPayload/32)}, ErrMalformed},
	} {
		_, err := SignNotification(c.rnd, tc.keys, a.cert, tc.rcpts, tc.ref, false)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}

	// The bound itself is fine, and opens.
	n, err := SignNotification(c.rnd, a.keys, a.cert, append(many(MaxRecipients-1), bob), ref, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.seal(t, n, "bob", "alice").Open(c.m("bob").keys, c.v); err != nil {
		t.Fatal(err)
	}
}

func TestOpenEnforcesBounds(t *testing.T) {
	c := testCommunity(t)
	a, bk := c.m("alice"), c.m("bob").keys
	// A sender who skips SignNotification's checks.
	n := &Notification{Version: Version, Sender: alice, SenderCert: a.cert.Bytes(), Body: c.mail(t, "alice", bob).Body}
	for i := range MaxRecipients {
		n.Recipients = append(n.Recipients, fmt.Sprintf("user%d@lab.example.org", i))
	}
	n.Recipients = append(n.Recipients, bob)
	n.Sig = a.keys.Signing.Sign(labelNotification, n.body())
	_, err := forge(t, c.rnd, wire.MustMarshal(n), bk.Sealing.Recipient(), bob, a).Open(bk, c.v)
	wantErr(t, err, ErrMalformed)

	// Payload bound, at decode and at verification.
	s := c.seal(t, c.mail(t, "alice", bob), "bob", "alice")
	s.Payload = make([]byte, MaxPayload+1)
	nodeSign(s, a)
	_, err = DecodeSealed(s.Encode())
	wantErr(t, err, ErrMalformed)
	wantErr(t, s.VerifyNode(c.v), ErrMalformed)
	_, err = DecodeSealed(make([]byte, maxSealed+1))
	wantErr(t, err, ErrMalformed)

	// Seal refuses a notification that would not fit the payload bound.
	n = &Notification{Version: Version, Sender: alice, SenderCert: a.cert.Bytes(), Recipients: []string{bob},
		Body: BodyRef{Chunks: make([]object.Key, MaxPayload/32)}}
	n.Sig = a.keys.Signing.Sign(labelNotification, n.body())
	_, err = Seal(c.rnd, n, c.m("bob").cert, a.nodeKey, a.nodeCert)
	wantErr(t, err, ErrMalformed)
}

func TestDecodeSealedRefuses(t *testing.T) {
	c := testCommunity(t)
	s := c.seal(t, c.mail(t, "alice", bob), "bob", "alice")
	type loose struct { // Sealed with loose field types
		_         struct{} `cbor:",toarray"`
		Version   uint16
		Recipient string
		Payload   []byte
		Node      []byte
		NodeCert  []byte
		Sig       []byte
	}
	ok := loose{Version: Version, Recipient: s.Recipient, Payload: s.Payload, Node: s.Node.ID[:], NodeCert: s.NodeCert, Sig: s.Sig}
	if _, err := DecodeSealed(wire.MustMarshal(ok)); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(l *loose){
		"version 2":         func(l *loose) { l.Version = 2 },
		"recipient upper":   func(l *loose) { l.Recipient = "Bob@lab.example.org" },
		"recipient invalid": func(l *loose) { l.Recipient = "bob" },
		"empty payload":     func(l *loose) { l.Payload = nil },
		"short node id":     func(l *loose) { l.Node = l.Node[:15] },
		"no node cert":      func(l *loose) { l.NodeCert = nil },
		"short sig":         func(l *loose) { l.Sig = l.Sig[:63] },
	} {
		l := ok
		edit(&l)
		_, err := DecodeSealed(wire.MustMarshal(l))
		wantErr(t, err, ErrMalformed)
		if name == "version 2" {
			wantErr(t, err, wire.ErrVersion)
		}
	}
	// Trailing bytes, and another encoding of the same values (the version
	// as a two-byte integer), are refused: a Sealed's Key is the hash of
	// the one encoding.
	_, err := DecodeSealed(append(s.Encode(), 0))
	wantErr(t, err, ErrMalformed)
	b := s.Encode()
	if b[0] != 0x86 || b[1] != Version {
		t.Fatalf("unexpected encoding %x", b[:2])
	}
	_, err = DecodeSealed(slices.Concat(b[:1], []byte{0x18, Version}, b[2:]))
	wantErr(t, err, ErrMalformed)
}

func TestSealRefuses(t *testing.T) {
	c := testCommunity(t)
	n := c.mail(t, "alice", bob)
	a := c.m("alice")
	_, err := Seal(c.rnd, n, c.m("carol").cert, a.nodeKey, a.nodeCert)
	wantErr(t, err, ErrNotForMe)
	_, err = Seal(c.rnd, n, c.m("bob").cert, c.m("bob").nodeKey, a.nodeCert)
	wantErr(t, err, identity.ErrKeyMismatch)
	_, err = Seal(c.rnd, nil, c.m("bob").cert, a.nodeKey, a.nodeCert)
	if err == nil {
		t.Fatal("sealed a nil notification")
	}
	_, err = Seal(io.LimitReader(c.rnd, 10), n, c.m("bob").cert, a.nodeKey, a.nodeCert)
	wantErr(t, err, io.ErrUnexpectedEOF)
}

func TestRelease(t *testing.T) {
	c := testCommunity(t)
	s := c.seal(t, c.mail(t, "alice", bob), "bob", "alice")
	bm, cm := c.m("bob"), c.m("carol")
	rel := SignRelease(bm.keys, s.Key())
	d, err := DecodeRelease(rel.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Verify(bm.cert); err != nil {
		t.Fatal(err)
	}
	if err := s.VerifyRelease(d, bm.cert.Bytes(), c.v); err != nil {
		t.Fatal(err)
	}

	wantErr(t, d.Verify(cm.cert), ErrForged)
	// Carol cannot release Bob's entry, with her name or his.
	wantErr(t, s.VerifyRelease(SignRelease(cm.keys, s.Key()), cm.cert.Bytes(), c.v), ErrNotForMe)
	forged := SignRelease(cm.keys, s.Key())
	forged.Recipient = bob
	wantErr(t, s.VerifyRelease(forged, bm.cert.Bytes(), c.v), ErrForged)
	// Nor does Bob's release of another entry release this one.
	other := c.seal(t, c.mail(t, "alice", bob), "bob", "alice")
	wantErr(t, s.VerifyRelease(SignRelease(bm.keys, other.Key()), bm.cert.Bytes(), c.v), ErrNotForMe)
	// A certificate of another CA does not do.
	foreign := newCommunity(t, 2, bob).m("bob")
	wantErr(t, s.VerifyRelease(SignRelease(foreign.keys, s.Key()), foreign.cert.Bytes(), c.v), ErrForged)

	// Every byte of the encoding matters.
	b := rel.Encode()
	for i := range b {
		x := bytes.Clone(b)
		x[i] ^= 0x01
		d, err := DecodeRelease(x)
		if err != nil {
			wantErr(t, err, ErrMalformed)
			continue
		}
		if s.VerifyRelease(d, bm.cert.Bytes(), c.v) == nil {
			t.Fatalf("byte %d: tampered release accepted", i)
		}
	}

	// Not canonical: the entry key as 31 or 33 bytes.
	type loose struct {
		_         struct{} `cbor:",toarray"`
		Version   uint16
		Recipient string
		Entry     []byte
		Sig       []byte
	}
	for _, n := range []int{31, 33} {
		_, err := DecodeRelease(wire.MustMarshal(loose{Version: Version, Recipient: bob, Entry: make([]byte, n), Sig: rel.Sig}))
		wantErr(t, err, ErrMalformed)
	}
	_, err = DecodeRelease(slices.Concat(b[:1], []byte{0x18, Version}, b[2:]))
	wantErr(t, err, ErrMalformed)
	_, err = DecodeRelease(make([]byte, maxRelease+1))
	wantErr(t, err, ErrMalformed)
}
