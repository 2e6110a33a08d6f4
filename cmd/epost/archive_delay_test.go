package main

import (
	"testing"
	"time"
)

// TestConfigArchiveDelay: archive_delay is a Go duration from 1s to 24h;
// absent, the archive keeps its default.
func TestConfigArchiveDelay(t *testing.T) {
	cfg, err := parseConfig([]byte("dir = \"d\"\nnode = \"n\"\narchive_delay = \"2m30s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.archiveDelay != 150*time.Second {
		t.Errorf("archive_delay 2m30s parsed as %v", cfg.archiveDelay)
	}
	if cfg, err := parseConfig([]byte("dir = \"d\"\nnode = \"n\"\n")); err != nil || cfg.archiveDelay != 0 {
		t.Errorf("no archive_delay: %v, %v; want 0 (the default)", cfg.archiveDelay, err)
	}
	for _, bad := range []string{"10", "0s", "500ms", "25h", "soon"} {
		if _, err := parseConfig([]byte("dir = \"d\"\nnode = \"n\"\narchive_delay = \"" + bad + "\"\n")); err == nil {
			t.Errorf("archive_delay %q accepted", bad)
		}
	}
}
