package imapd

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/epost-mail/epost/internal/post"
)

// brokenMIME are messages broken the ways hostile or buggy senders break
// MIME; the integration tests deliver and APPEND the same.
func brokenMIME() map[string][]byte {
	var deep bytes.Buffer
	deep.WriteString("Subject: deep\r\n")
	for i := range 1000 {
		fmt.Fprintf(&deep, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
	}
	deep.WriteString("Content-Type: text/plain\r\n\r\nbottom\r\n")
	var headers bytes.Buffer
	headers.WriteString("Subject: many headers\r\n")
	for i := range 10000 {
		fmt.Fprintf(&headers, "X-H%d: %d\r\n", i, i)
	}
	headers.WriteString("\r\nbody\r\n")
	return map[string][]byte{
		"unterminated multipart": []byte("Subject: unterminated\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n" +
			"--zz\r\nContent-Type: text/plain\r\n\r\nno closing boundary\r\n"),
		"bad base64": []byte("Subject: base64\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			"!!!not base64 at all===\r\n"),
		"bad charset": []byte("From: =?x-unknown?B?////?= <a@example.org>\r\nSubject: =?utf-8?Q?=FF=FE?=\r\n" +
			"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\n\xff\xfe\xfd\r\n"),
		"deep nesting":    deep.Bytes(),
		"10000 headers":   headers.Bytes(),
		"no boundary":     []byte("Content-Type: multipart/alternative\r\n\r\n--\r\n--\r\n"),
		"bare LF and NUL": []byte("From: a@example.org\nSubject: \x00\n\n\x00\x01\n"),
		"bad encoded part": []byte("Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Transfer-Encoding: quoted-printable\r\n" +
			"Content-Type: text/plain; charset=\"\r\n\r\n=ZZ=\r\n--q\r\nContent-Type: message/rfc822\r\n\r\n--q--\r\n"),
	}
}

// parseAll runs msg through everything FETCH and SEARCH parse a message
// with.
func parseAll(msg []byte) {
	view := mimeView(msg)
	validBodyStructure(imapserver.ExtractBodyStructure(bytes.NewReader(view)))
	envelope(msg)
	for _, item := range []*imap.FetchItemBodySection{
		{}, {Specifier: imap.PartSpecifierHeader}, {Specifier: imap.PartSpecifierText},
		{HeaderFields: []string{"Subject", "From"}}, {HeaderFieldsNot: []string{"Subject"}},
	} {
		bodySection(msg, item)
	}
	for _, item := range []*imap.FetchItemBodySection{
		{Part: []int{1}}, {Part: []int{1, 2}, Specifier: imap.PartSpecifierMIME}, {Part: []int{2}, Specifier: imap.PartSpecifierText},
	} {
		bodySection(view, item)
	}
	imapserver.ExtractBinarySection(bytes.NewReader(view), &imap.FetchItemBinarySection{Part: []int{1}})
	imapserver.ExtractBinarySectionSize(bytes.NewReader(view), &imap.FetchItemBinarySectionSize{Part: []int{1}})
	l := &loaded{ok: true, body: msg, msg: post.Message{Body: post.BodyRef{Size: int64(len(msg))}}}
	match(l, &imap.SearchCriteria{Text: []string{"bottom"}, Body: []string{"x"},
		Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "d"}}})
}

// FuzzMessageParsing: no message, however broken, panics the parsers
// FETCH (BODYSTRUCTURE, ENVELOPE, BODY[...], BINARY[...]) and SEARCH
// use.
func FuzzMessageParsing(f *testing.F) {
	for _, m := range brokenMIME() {
		if len(m) < 4096 {
			f.Add(m)
		}
	}
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n--a--\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) { parseAll(msg) })
}

// TestBrokenMIMEParses: the big broken messages (too big to be fuzz
// seeds) parse too.
func TestBrokenMIMEParses(t *testing.T) {
	for name, m := range brokenMIME() {
		t.Run(name, func(t *testing.T) { parseAll(m) })
	}
}

// nested is a message of depth multiparts, each inside the last.
func nested(depth int) []byte {
	var b bytes.Buffer
	b.WriteString("Subject: nested\r\n")
	for i := range depth {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
	}
	b.WriteString("Content-Type: text/plain\r\n\r\nbottom\r\n")
	return b.Bytes()
}

// TestDeepNestingFlattened: a message nested deeper than maxMIMEDepth is
// one text/plain part (its MIME source) to BODYSTRUCTURE (without the cap, 20,000 levels cost
// go-imap's extractor hours: each level reads through all above it);
// ordinary nesting is served as it is.
func TestDeepNestingFlattened(t *testing.T) {
	if m := nested(maxMIMEDepth - 1); !bytes.Equal(mimeView(m), m) {
		t.Fatal("a message within the depth limit was changed")
	}
	bs := imapserver.ExtractBodyStructure(bytes.NewReader(mimeView(nested(maxMIMEDepth - 1))))
	if _, ok := bs.(*imap.BodyStructureMultiPart); !ok {
		t.Fatalf("within the limit: %T, want multipart", bs)
	}
	deep := nested(20000)
	view := mimeView(deep)
	if !bytes.HasSuffix(view, deep) {
		t.Fatal("the view lost the message")
	}
	sp, ok := imapserver.ExtractBodyStructure(bytes.NewReader(view)).(*imap.BodyStructureSinglePart)
	if !ok || sp.Type != "text" || sp.Subtype != "plain" {
		t.Fatalf("too deep: %+v, want one text/plain part", sp)
	}
	l := &loaded{ok: true, body: deep}
	if !match(l, &imap.SearchCriteria{Text: []string{"bottom"}}) {
		t.Fatal("SEARCH TEXT misses a word of a too-deep message")
	}
	// A message/rfc822 chain counts as nesting too.
	var chain bytes.Buffer
	for range maxMIMEDepth + 5 {
		chain.WriteString("Content-Type: message/rfc822\r\n\r\n")
	}
	chain.WriteString("Subject: inner\r\n\r\nx\r\n")
	if bytes.Equal(mimeView(chain.Bytes()), chain.Bytes()) {
		t.Fatal("a deep message/rfc822 chain was not flattened")
	}
}
