package main

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// FuzzNodeConfig: a configuration file parses only with the required
// settings and valid values, and what parses survives being written out
// and read back unchanged.
func FuzzNodeConfig(f *testing.F) {
	// The file `epost init` writes, without its comments: long seeds
	// make the fuzzer's minimizing slow.
	f.Add(withoutComments(fmt.Sprintf(configTemplate, "epost.toml", "/var/lib/epost", "n1",
		quoteList([]string{"/ip4/192.0.2.1/tcp/4001/p2p/12D3KooWGzh5h9fGzsoTAfJRbTeNPt1jTSQD5hNTfJwgKZvZv3Rk"}),
		quoteList([]string{"alice@example.org"}), quoteList([]string{"example.org"}))))
	f.Add("dir = \"d\"\nnode = \"n\"\nlog = \"DEBUG+2\"\npoll = \"90s\"\ncommunity = 40\n[gateway]\nuser = \"gw@example.org\"\n")
	f.Add("dir = 'd'\nnode = \"\"\"\nn\"\"\"\nlisten = []\nrelay = true\npoll = \"1ms\"\n")
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := parseConfig([]byte(s))
		if err != nil {
			return
		}
		if cfg.Node == "" || cfg.Dir == "" || cfg.Log == "" || (cfg.Poll != "" && cfg.poll < time.Second) {
			t.Fatalf("accepted an invalid configuration: %+v", cfg)
		}
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(cfg); err != nil {
			t.Fatalf("configuration does not encode: %v", err)
		}
		again, err := parseConfig(buf.Bytes())
		if err != nil || !reflect.DeepEqual(again, cfg) {
			t.Fatalf("%+v written as\n%s\nreads back as %+v, %v", cfg, buf.Bytes(), again, err)
		}
	})
}

func withoutComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// FuzzMbox: whatever an mbox holds, every message comes out with CRLF
// line endings, and writing the messages back as an mboxrd (">From "
// escaped) splits into the same messages again.
func FuzzMbox(f *testing.F) {
	f.Add("From alice@example.org Thu Nov 26 06:00:00 2026\nSubject: one\n\nbody\n>From here\n\nFrom bob Mon Jan  2 15:04:05 2006\r\nDate: Mon, 2 Jan 2006 15:04:05 +0000\r\n\r\n>>From there\r\n")
	f.Add("From \n\n\nFrom x\r\r\nFrom y\n")
	f.Add("Subject: no From line\n\nbody\n")
	f.Fuzz(func(t *testing.T, s string) {
		msgs, err := splitMbox(strings.NewReader(s), "fuzz", "INBOX")
		if err != nil {
			return
		}
		var mbox strings.Builder
		for _, m := range msgs {
			data := string(m.data)
			if !strings.HasSuffix(data, "\r\n") || strings.Count(data, "\n") != strings.Count(data, "\r\n") {
				t.Fatalf("message %q has bare line endings", data)
			}
			mbox.WriteString("From fuzz Thu Nov 26 06:00:00 2026\n")
			for _, l := range strings.SplitAfter(data, "\r\n") {
				if strings.HasPrefix(strings.TrimLeft(l, ">"), "From ") {
					mbox.WriteString(">")
				}
				mbox.WriteString(l)
			}
		}
		again, err := splitMbox(strings.NewReader(mbox.String()), "again", "INBOX")
		if err != nil && len(msgs) > 0 {
			t.Fatalf("written back: %v", err)
		}
		if !slices.EqualFunc(msgs, again, func(a, b importMsg) bool { return bytes.Equal(a.data, b.data) }) {
			t.Fatalf("%q splits into %d messages, written back as\n%q into %d", s, len(msgs), mbox.String(), len(again))
		}
	})
}

// FuzzCheckPassword: no stored hash, however malformed, panics the check
// or asks scrypt for more than maxScryptCost (128*N*r bytes per login
// attempt). Only cheap hashes are then checked in full: scrypt at the
// cap takes long enough on a loaded machine to overrun the fuzz time.
func FuzzCheckPassword(f *testing.F) {
	f.Add("scrypt$16$1$1$c2FsdHNhbHRzYWx0c2FsdA$0Ugc3dd9lUQbHi/fnLKsrHmYqBYHALGv4MVfZvT8Nkg", "pw")
	f.Add("scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "")
	f.Add("scrypt$1048576$32$1$$", "x")
	f.Fuzz(func(t *testing.T, stored, pw string) {
		n, r, _, _, ok := parseHash(stored)
		if ok && n*r > maxScryptCost {
			t.Fatalf("%q: N*r = %d, above the cap", stored, n*r)
		}
		if !ok || n*r <= 1<<12 {
			checkPassword(stored, pw)
		}
	})
}
