package smtpd

import (
	"bytes"
	"net/mail"

	"github.com/epost-mail/epost/internal/identity"
)

// recipientGroups splits a message's community recipients into the
// groups POST sends one notification to. Every recipient of a
// notification sees its whole (signed) recipient list, so a blind copy
// (an envelope recipient not named in To or Cc, RFC 5322 section 3.6.3)
// must not share one: the recipients the headers name form one group,
// and each blind recipient gets a group of their own. The split depends
// only on the message and the envelope, so a client's retry makes the
// same groups, hence the same message ids, and nobody gets a second copy.
// If the headers cannot be parsed, every recipient is treated as blind.
func recipientGroups(msg []byte, rcpts []string) [][]string {
	named := map[string]bool{}
	if m, err := mail.ReadMessage(bytes.NewReader(msg)); err == nil {
		for _, field := range []string{"To", "Cc"} {
			list, err := m.Header.AddressList(field)
			if err != nil {
				continue
			}
			for _, a := range list {
				if c, err := identity.CanonicalAddress(a.Address); err == nil {
					named[c] = true
				}
			}
		}
	}
	var visible []string
	var groups [][]string
	for _, r := range rcpts {
		if named[r] {
			visible = append(visible, r)
		} else {
			groups = append(groups, []string{r})
		}
	}
	if len(visible) > 0 {
		groups = append([][]string{visible}, groups...)
	}
	return groups
}
