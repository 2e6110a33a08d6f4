package node

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// scrape returns what the status page's /metrics serves for nodes.
func scrape(t *testing.T, nodes []*Node) []byte {
	t.Helper()
	srv := httptest.NewServer(StatusHandler("test", func() []*Node { return nodes }))
	defer srv.Close()
	res, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMetricsAndStorageStatus(t *testing.T) {
	r := newStorageRing(t, 2)
	waitFor(t, "ring settled", 60*time.Second, r.settled)
	type fakeStats struct {
		LoginThrottled uint64
		TooLarge       uint64
		note           string
	}
	r.nodes[0].AddCounters("imap", func() any { return fakeStats{LoginThrottled: 3, TooLarge: 1} })
	r.nodes[0].AddCounters("imap", func() any { return fakeStats{LoginThrottled: 2} })
	b := scrape(t, r.nodes)
	for _, n := range r.nodes {
		for _, want := range []string{
			`epost_node_active{node="` + n.ID().Short() + `"} 1`,
			`epost_store_objects{node="` + n.ID().Short() + `"}`,
			`epost_past_refused_total{node="` + n.ID().Short() + `"} 0`,
			`epost_mail_users{node="` + n.ID().Short() + `"} 0`,
		} {
			if !strings.Contains(string(b), want) {
				t.Errorf("metrics lack %q:\n%s", want, b)
			}
		}
	}
	if want := `epost_server_events_total{counter="login_throttled",node="` + r.nodes[0].ID().Short() + `",server="imap"} 5`; !strings.Contains(string(b), want) {
		t.Errorf("metrics lack the front-end counter %q:\n%s", want, b)
	}
	if !strings.Contains(string(b), "epost_process_resident_bytes ") {
		t.Errorf("metrics lack the process's resident memory:\n%s", b)
	}
	if p := Report("test", r.nodes).Process; p.RSSBytes <= 0 || p.RSSPerNodeBytes != p.RSSBytes/2 || p.Goroutines == 0 {
		t.Errorf("process status = %+v", p)
	}
	s := r.nodes[0].Status()
	if s.Storage == nil {
		t.Fatal("a node with a store reports no storage status")
	}
	if len(s.Storage.PerKind) != 4 || s.Storage.PerKind[3].Kind != "fragment" {
		t.Errorf("storage use by kind %+v", s.Storage.PerKind)
	}
	if got := s.Servers["imap"]; got["login_throttled"] != 5 || got["too_large"] != 1 || len(got) != 2 {
		t.Errorf("status servers = %v, want imap login_throttled 5 and too_large 1 (two front-ends summed)", s.Servers)
	}
}
