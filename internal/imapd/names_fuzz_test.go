package imapd

import (
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// FuzzNamesAndFlags: the folder names and flags clients send are put in
// a canonical form before POST sees them; that form must be stable
// (canonical twice is canonical once), or two spellings of one folder or
// flag would be stored as two.
func FuzzNamesAndFlags(f *testing.F) {
	f.Add("INBOX", `\Seen \Flagged`)
	f.Add("Archive/2026/", `\seen $Junk \Recent \SEEN`)
	f.Add("inbox", "")
	f.Add("///", `\Draft  x`)
	f.Fuzz(func(t *testing.T, name, flags string) {
		n := canonicalName(name)
		if again := canonicalName(n); again != n {
			t.Fatalf("%q: canonical %q, then %q", name, n, again)
		}
		if strings.EqualFold(n, "INBOX") && n != "INBOX" {
			t.Fatalf("%q names INBOX as %q", name, n)
		}
		var in []imap.Flag
		for _, s := range strings.Split(flags, " ") {
			in = append(in, imap.Flag(s))
		}
		p := postFlags(in)
		if !slices.IsSorted(p) || len(slices.Compact(slices.Clone(p))) != len(p) || slices.Contains(p, `\Recent`) || slices.Contains(p, "") {
			t.Fatalf("%q converts to %q", flags, p)
		}
		if again := postFlags(imapFlags(p)); !slices.Equal(again, p) {
			t.Fatalf("%q: flags %q, then %q", flags, p, again)
		}
	})
}
