package identity

import (
	"fmt"
	"strings"
)

// Address limits, from RFC 5321 section 4.5.3.1.
const (
	maxLocalPart = 64
	maxDomain    = 253
	maxLabel     = 63
	maxAddress   = 254
)

// CanonicalAddress returns the one form of a mail address that epost
// hashes into a UserID and names files after: "local@domain", ASCII,
// lowercased, with surrounding white space removed.
//
// The whole address is lowercased, not just the domain: RFC 5321 section
// 2.4 lets the receiving domain decide whether local parts are
// case-sensitive, and in a community two users whose names differ only in
// case would be a trap for impersonation. The local part is restricted to
// letters, digits and . _ - + (no leading, trailing or doubled dot), which
// also makes the address safe as a directory name. The domain is one or
// more DNS labels. Internationalised addresses (RFC 6531) are not
// accepted yet.
func CanonicalAddress(s string) (string, error) {
	a := strings.ToLower(strings.TrimSpace(s))
	bad := func(why string, args ...any) (string, error) {
		return "", fmt.Errorf("%w %q: "+why, append([]any{ErrBadAddress, s}, args...)...)
	}
	if a == "" {
		return bad("empty")
	}
	if len(a) > maxAddress {
		return bad("%d characters, at most %d", len(a), maxAddress)
	}
	for i := 0; i < len(a); i++ {
		if a[i] >= 0x80 {
			return bad("non-ASCII addresses are not supported")
		}
	}
	at := strings.IndexByte(a, '@')
	if at < 0 {
		return bad("no '@'")
	}
	local, domain := a[:at], a[at+1:]
	if strings.IndexByte(domain, '@') >= 0 {
		return bad("more than one '@'")
	}
	switch {
	case local == "":
		return bad("empty local part")
	case len(local) > maxLocalPart:
		return bad("local part of %d characters, at most %d", len(local), maxLocalPart)
	case local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, ".."):
		return bad("local part has a leading, trailing or doubled '.'")
	}
	for i := 0; i < len(local); i++ {
		if c := local[i]; !isLowerAlnum(c) && !strings.ContainsRune("._-+", rune(c)) {
			return bad("character %q not allowed in the local part (letters, digits, . _ - + only)", c)
		}
	}
	if domain == "" {
		return bad("empty domain")
	}
	if len(domain) > maxDomain {
		return bad("domain of %d characters, at most %d", len(domain), maxDomain)
	}
	for _, label := range strings.Split(domain, ".") {
		switch {
		case label == "":
			return bad("empty label in domain")
		case len(label) > maxLabel:
			return bad("domain label of %d characters, at most %d", len(label), maxLabel)
		case label[0] == '-' || label[len(label)-1] == '-':
			return bad("domain label %q starts or ends with '-'", label)
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isLowerAlnum(c) && c != '-' {
				return bad("character %q not allowed in the domain (letters, digits, - only)", c)
			}
		}
	}
	return a, nil
}

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }
