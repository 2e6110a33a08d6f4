package node

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestMetricsAndStorageStatus(t *testing.T) {
	r := newStorageRing(t, 2)
	waitFor(t, "ring settled", 60*time.Second, r.settled)
	srv := httptest.NewServer(StatusHandler("test", func() []*Node { return r.nodes }))
	defer srv.Close()
	res, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
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
	if s := r.nodes[0].Status(); s.Storage == nil {
		t.Fatal("a node with a store reports no storage status")
	}
}
