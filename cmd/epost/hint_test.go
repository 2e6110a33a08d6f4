package main

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/store"
)

func TestHintsForCommonErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, inUse := net.Listen("tcp", ln.Addr().String())
	if inUse == nil {
		t.Fatal("a second listener on one port succeeded")
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("node: IMAP on %s: %w", ln.Addr(), inUse), "another port"},
		{fmt.Errorf("user recover: %w", identity.ErrBadRecoveryCode), "mistyped"},
		{fmt.Errorf("user recover: %w", identity.ErrWrongRecoveryCode), "another backup"},
		{fmt.Errorf("node: %w", identity.ErrWrongCA), "another community"},
		{fmt.Errorf("import: %w", store.ErrFull), "disk is full"},
	} {
		if h := hint(c.err); !strings.Contains(h, c.want) {
			t.Errorf("hint(%v) = %q, want it to mention %q", c.err, h, c.want)
		}
	}
	if h := hint(errors.New("something else")); h != "" {
		t.Errorf("hint for an unknown error: %q", h)
	}
}
