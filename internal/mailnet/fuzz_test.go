package mailnet

import (
	"slices"
	"strings"
	"testing"
)

// FuzzRecipientGroups: whatever a message's header says, the groups
// hold every envelope recipient exactly once, and only the first (the
// recipients the header names) has more than one: a blind copy never
// shares a notification.
func FuzzRecipientGroups(f *testing.F) {
	f.Add([]byte("To: Bob <bob@example.org>, carol@example.org\r\nCc: dave@example.org\r\n\r\nhi\r\n"), "bob@example.org carol@example.org eve@example.org dave@example.org")
	f.Add([]byte("To: undisclosed-recipients:;\r\n\r\n"), "a@x b@x")
	f.Add([]byte("To: =?utf-8?q?B=C3=B6b?= <BOB@Example.org>\n\n"), "bob@example.org")
	f.Fuzz(func(t *testing.T, msg []byte, rcpts string) {
		rs := slices.Compact(slices.Sorted(slices.Values(strings.Fields(rcpts))))
		groups := RecipientGroups(msg, rs)
		var all []string
		for i, g := range groups {
			if len(g) == 0 || (i > 0 && len(g) > 1) {
				t.Fatalf("groups %q", groups)
			}
			all = append(all, g...)
		}
		slices.Sort(all)
		if !slices.Equal(all, rs) {
			t.Fatalf("groups %q of recipients %q", groups, rs)
		}
	})
}
