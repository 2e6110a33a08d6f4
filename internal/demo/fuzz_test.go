package demo

import (
	"encoding/json"
	"io"
	"reflect"
	"testing"

	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/node"
)

// FuzzStatusReport: `epost status` draws whatever status.json a URL
// serves; no report, however inconsistent, panics the view or the
// readiness check.
func FuzzStatusReport(f *testing.F) {
	a, b, c := id.FromUint64(1, 0).String(), id.FromUint64(1<<63, 0).String(), id.FromUint64(3<<62, 0).String()
	r := node.StatusReport{Title: "epost node n1", Time: "2026-11-26T06:00:00Z", Nodes: []node.Status{
		{ID: a, Short: a[:8], Running: true, Active: true, LeafSetSize: 2, Left: []string{c}, Right: []string{b}, LeafSet: 2},
		{ID: b, Short: b[:8], Running: true, LeafSetSize: 1, Left: []string{a, "x"}},
		{ID: c, Short: c[:8], LeafSetSize: 0},
	}}
	seed, _ := json.Marshal(r)
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		var r node.StatusReport
		if json.Unmarshal(b, &r) != nil {
			return
		}
		if ok, _ := ready(r); ok && len(r.Nodes) == 0 {
			t.Fatal("an empty report is ready")
		}
		if err := WriteView(io.Discard, r); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzParseState: a demo directory's state.json loads or fails cleanly,
// and what loads saves and loads back the same.
func FuzzParseState(f *testing.F) {
	seed, _ := json.MarshalIndent(savedState{Nodes: []string{"/ip4/127.0.0.1/tcp/40001"}, Users: []User{
		{Address: "alice@demo.epost", Password: "pw", IMAP: "127.0.0.1:1143", SMTP: "127.0.0.1:1587", Node: "node-1"},
	}}, "", "  ")
	f.Add(seed)
	f.Add([]byte(`{"nodes":null,"users":[{}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseState(b)
		if err != nil {
			return
		}
		again, _ := json.Marshal(st)
		if st2, err := parseState(again); err != nil || !reflect.DeepEqual(st2, st) {
			t.Fatalf("%+v saved as %s loads as %+v, %v", st, again, st2, err)
		}
	})
}
