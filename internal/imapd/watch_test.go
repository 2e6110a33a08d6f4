package imapd

import (
	"bytes"
	"testing"
)

func TestLiteralHeader(t *testing.T) {
	for _, c := range []struct {
		line     string
		size     int64
		sync, ok bool
	}{
		{"a LOGIN {5}\r\n", 5, true, true},
		{"a LOGIN {5+}\r\n", 5, false, true},
		{"a LOGIN {5}\n", 5, true, true},
		{"a LOGIN {99999999999999999999999}\r\n", 1<<63 - 1, true, true},
		{"a LOGIN {}\r\n", 0, false, false},
		{"a LOGIN {+}\r\n", 0, false, false},
		{"a LOGIN {5x}\r\n", 0, false, false},
		{"a LOGIN x}\r\n", 0, false, false},
		{"a NOOP\r\n", 0, false, false},
	} {
		size, sync, ok := literalHeader([]byte(c.line))
		if size != c.size || sync != c.sync || ok != c.ok {
			t.Errorf("%q: %d %v %v, want %d %v %v", c.line, size, sync, ok, c.size, c.sync, c.ok)
		}
	}
}

func TestValidMailboxName(t *testing.T) {
	for name, want := range map[string]bool{
		"INBOX": true, "a b/c": true, "été": true, "&-": true, "&AOk-t&AOk-": true, "&AOk- &AOk-": true,
		"&2D3eAA-": true, // U+1F600 as a surrogate pair
		"bad\xff":  false, "a&b": false, "a&AGE-": false, "&AOkA6Q-&AOk-": false, "a\x01": false,
		"&2D0-": false, "&AO-": false, "&AOk=-": false, "x\x7f": false,
	} {
		if got := validMailboxName([]byte(name)); got != want {
			t.Errorf("validMailboxName(%q) = %v, want %v", name, got, want)
		}
	}
}

// FuzzWatch: whatever the client sends, in whatever pieces, the watch
// does not panic, and until it refuses something it passes on exactly
// what it got, less the line it holds back.
func FuzzWatch(f *testing.F) {
	f.Add([]byte("a LOGIN {5}\r\nalice {3}\r\npw!\r\nb CREATE {9000}\r\nc NOOP\r\n"), uint8(7))
	f.Add([]byte("a APPEND INBOX {10}\r\n0123456789\r\nb SELECT \"x\xff\"\r\n"), uint8(3))
	f.Add([]byte("a IDLE\r\nDONE\r\nb STARTTLS\r\n\x16\x03\x01"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		w := &cmdWatch{}
		n := int(step%64) + 1
		for i := 0; i < len(in); i += n {
			w.feed(in[i:min(i+n, len(in))])
			w.sent([]byte("+ Ready for literal data\r\n"))
		}
		if w.reply == "" && !w.skip && !w.badName && len(w.bad) == 0 && !bytes.Equal(append(w.pending, w.line...), in) && !w.long {
			t.Fatalf("passed %q, held %q, of %q", w.pending, w.line, in)
		}
	})
}
