package demo

import (
	"context"
	"fmt"
	"net/smtp"
	"testing"
	"time"
)

// TestRestartWithTheSameDirectory: a demo started again on its directory
// comes back with the same users, passwords and ports, and the mail.
func TestRestartWithTheSameDirectory(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Nodes, cfg.HTTP, cfg.Dir = 3, "", dir
	c, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	us := c.Users()
	alice, bob := us[0], us[1]
	msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: kept across restarts\r\n\r\nstill here?\r\n", alice.Address, bob.Address)
	if err := smtp.SendMail(alice.SMTP, smtp.PlainAuth("", alice.Address, alice.Password, "127.0.0.1"), alice.Address, []string{bob.Address}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := poll(ctx, time.Now().Add(60*time.Second), 100*time.Millisecond, func() bool { return hasSubject(bob, "kept across restarts") }); err != nil {
		t.Fatalf("first run: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c, err = Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	again := c.Users()
	for i := range us {
		if again[i] != us[i] {
			t.Fatalf("user %d came back as %+v, was %+v", i, again[i], us[i])
		}
	}
	if err := poll(ctx, time.Now().Add(60*time.Second), 100*time.Millisecond, func() bool { return hasSubject(again[1], "kept across restarts") }); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if err := c.CheckMail(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
}
