package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
)

func TestNewLoggerFormats(t *testing.T) {
	var b bytes.Buffer
	l, err := newLogger(&b, slog.LevelInfo, "json")
	if err != nil {
		t.Fatal(err)
	}
	l.With("node", "1a2b3c4d").Info("joined", "leaf_set", 8)
	var rec map[string]any
	if err := json.Unmarshal(b.Bytes(), &rec); err != nil {
		t.Fatalf("json log line %q: %v", b.String(), err)
	}
	if rec["msg"] != "joined" || rec["node"] != "1a2b3c4d" || rec["leaf_set"] != float64(8) {
		t.Errorf("json log line = %v", rec)
	}
	b.Reset()
	if l, err = newLogger(&b, slog.LevelInfo, ""); err != nil {
		t.Fatal(err)
	}
	l.Info("joined")
	if !bytes.Contains(b.Bytes(), []byte("msg=joined")) {
		t.Errorf("text log line = %q", b.String())
	}
	if _, err := newLogger(&b, slog.LevelInfo, "xml"); err == nil {
		t.Error("log format xml accepted")
	}
}
