package node

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestRecentEvents(t *testing.T) {
	var out bytes.Buffer
	ring := &eventRing{}
	log := slog.New(eventHandler{next: slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn}), ring: ring}).With("node", "1a2b")
	log.Debug("too small to keep")
	log.Info("joined", "leaf_set", 8)
	log.Warn("peer refused", "peer", "x")
	got := ring.recent()
	if len(got) != 2 || got[0].Msg != "peer refused" || got[1].Msg != "joined" {
		t.Fatalf("events = %+v, want the warning then the info", got)
	}
	if got[1].Attrs != "leaf_set=8" || got[0].Level != "WARN" {
		t.Errorf("events = %+v", got)
	}
	// The output keeps its own level: only the warning was written.
	if strings.Contains(out.String(), "joined") || !strings.Contains(out.String(), "peer refused") {
		t.Errorf("log output = %q", out.String())
	}
	for i := range 2 * maxEvents {
		log.Info(fmt.Sprint("event ", i))
	}
	got = ring.recent()
	if len(got) != maxEvents || got[0].Msg != fmt.Sprint("event ", 2*maxEvents-1) || got[maxEvents-1].Msg != fmt.Sprint("event ", maxEvents) {
		t.Errorf("after wrapping: %d events, newest %q, oldest %q", len(got), got[0].Msg, got[len(got)-1].Msg)
	}
}
