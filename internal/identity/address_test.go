package identity

import (
	"errors"
	"strings"
	"testing"
)

func TestCanonicalAddress(t *testing.T) {
	tests := []struct {
		in, want string
		err      string // substring of the error, "" if valid
	}{
		{"alice@lab.example.org", "alice@lab.example.org", ""},
		{"  Alice@Lab.Example.ORG\t", "alice@lab.example.org", ""},
		{"first.last+tag_x-y@sub-1.example.com", "first.last+tag_x-y@sub-1.example.com", ""},
		{"root@localhost", "root@localhost", ""},
		{"", "", "empty"},
		{"alice", "", "no '@'"},
		{"a@b@c", "", "more than one '@'"},
		{"@example.org", "", "empty local part"},
		{"alice@", "", "empty domain"},
		{".alice@x.org", "", "leading, trailing or doubled '.'"},
		{"alice.@x.org", "", "leading, trailing or doubled '.'"},
		{"a..b@x.org", "", "leading, trailing or doubled '.'"},
		{"a/b@x.org", "", "character '/' not allowed in the local part"},
		{"a b@x.org", "", "character ' ' not allowed"},
		{"alice@x..org", "", "empty label"},
		{"alice@.x.org", "", "empty label"},
		{"alice@x.org.", "", "empty label"},
		{"alice@-x.org", "", "starts or ends with '-'"},
		{"alice@x_y.org", "", "character '_' not allowed in the domain"},
		{"jörg@x.org", "", "non-ASCII"},
		{strings.Repeat("a", 65) + "@x.org", "", "local part of 65 characters"},
		{"a@" + strings.Repeat("b", 64) + ".org", "", "domain label of 64 characters"},
		{"a@" + strings.Repeat("b.", 130) + "org", "", "characters, at most 254"},
	}
	for _, tt := range tests {
		got, err := CanonicalAddress(tt.in)
		switch {
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("CanonicalAddress(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		case tt.err != "" && (err == nil || !errors.Is(err, ErrBadAddress) || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("CanonicalAddress(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.err)
		}
	}
}
