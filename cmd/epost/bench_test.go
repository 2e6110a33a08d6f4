package main

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/epost-mail/epost/internal/demo"
	"github.com/epost-mail/epost/internal/mailbench"
)

// TestBench runs `epost bench` against a real demo community, with IDLE
// and with polling, and checks that the report adds up (timings are not
// judged: they depend on the machine).
func TestBench(t *testing.T) {
	cfg := demo.DefaultConfig()
	cfg.Nodes, cfg.HTTP, cfg.Dir = 3, "", t.TempDir()
	c, err := demo.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	us := c.Users()
	from, to := us[0], us[1]
	for _, extra := range [][]string{{"--concurrency", "2"}, {"--poll"}} {
		args := append([]string{"--smtp", from.SMTP, "--imap", to.IMAP, "--from", from.Address, "--from-pass", from.Password,
			"--to", to.Address, "--to-pass", to.Password, "--messages", "6", "--size", "2000", "--json"}, extra...)
		out, errOut, err := runCmd(t, cmdBench, args...)
		if err != nil {
			t.Fatalf("bench %v: %v\n%s", extra, err, errOut)
		}
		var r mailbench.Result
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("bench %v: not one JSON object: %v\n%s", extra, err, out)
		}
		wantWatch := "idle"
		if extra[0] == "--poll" {
			wantWatch = "poll"
		}
		if r.Messages != 6 || r.Sent != 6 || r.Delivered != 6 || r.Errors != 0 || r.Watch != wantWatch {
			t.Fatalf("bench %v: %+v", extra, r)
		}
		if !(r.Min > 0 && r.Min <= r.P50 && r.P50 <= r.P90 && r.P90 <= r.P99 && r.P99 <= r.Max) {
			t.Fatalf("bench %v: latencies out of order: %+v", extra, r)
		}
		if r.Seconds <= 0 || r.Throughput <= 0 || r.SubmitP50 <= 0 || r.SubmitP50 > r.Max {
			t.Fatalf("bench %v: run totals: %+v", extra, r)
		}
	}
	// A wrong password fails the run at once, before anything is sent.
	_, _, err = runCmd(t, cmdBench, "--smtp", from.SMTP, "--imap", to.IMAP, "--from", from.Address, "--from-pass", "wrong",
		"--to", to.Address, "--to-pass", to.Password, "--messages", "1")
	if err == nil {
		t.Fatal("bench with a wrong SMTP password succeeded")
	}
}
