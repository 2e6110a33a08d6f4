package node

import (
	"bytes"
	"encoding/json"
	"html/template"
	"math"
	"net/http"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/overlay"
)

// Status is a snapshot of one node's overlay state, for the status page
// and for tools. Ids are 32 hex digits.
type Status struct {
	ID    string `json:"id"`
	Short string `json:"short"`
	Addr  string `json:"addr"`
	// Position is the id as a fraction of the ring, in [0, 1).
	Position float64 `json:"position"`
	// Running is false before Start and after Close; the overlay fields
	// below are then empty.
	Running bool `json:"running"`
	// Active: joined, and allowed to deliver messages.
	Active bool `json:"active"`
	// LeafSetSize is the leaf set's capacity L (half on each side).
	LeafSetSize int `json:"leaf_set_size"`
	// Left and Right are the leaf set's sides, nearest first; in a ring
	// smaller than L a node may be on both.
	Left  []string `json:"left"`
	Right []string `json:"right"`
	// LeafSet is the number of distinct leaf-set members.
	LeafSet int `json:"leaf_set"`
	// TableEntries is the number of filled routing-table slots; TableRows
	// counts them per row, up to the last non-empty row; Table lists them
	// row by row.
	TableEntries int      `json:"table_entries"`
	TableRows    []int    `json:"table_rows"`
	Table        []string `json:"table"`
	// Delivered counts messages delivered here as the root of their key.
	Delivered uint64 `json:"delivered"`
	// IndirectLinks counts nodes reached only through a helper.
	IndirectLinks int `json:"indirect_links"`
	// Hostile or broken peers: connections refused (a certificate from
	// another community, a key that does not match it), frames and
	// overlay messages dropped as malformed or unauthenticated.
	PeersRefused uint64 `json:"peers_refused"`
	// RevocationEpoch is the epoch of the revocation list enforced.
	RevocationEpoch uint64 `json:"revocation_epoch"`
	MalformedFrames uint64 `json:"malformed_frames"`
	Unauthenticated uint64 `json:"unauthenticated_messages"`
	MalformedMsgs   uint64 `json:"malformed_messages"`

	// Storage (nodes with a DataDir): what the store holds, and PAST's
	// and POST's counters.
	Storage *StorageStatus `json:"storage,omitempty"`
	// Servers holds the mail front-ends' counters (logins, refusals of
	// hostile clients, messages accepted) by front-end and counter name.
	Servers map[string]map[string]uint64 `json:"servers,omitempty"`
	// Events are the node's most recent notable log records, newest
	// first.
	Events []Event `json:"events"`
}

// counterMap turns a struct of uint64 counters into name -> value, the
// names in snake case ("LoginThrottled" becomes "login_throttled").
func counterMap(v any) map[string]uint64 {
	out := map[string]uint64{}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return out
	}
	for i := 0; i < rv.NumField(); i++ {
		f := rv.Type().Field(i)
		if !f.IsExported() || rv.Field(i).Kind() != reflect.Uint64 {
			continue
		}
		out[snake(f.Name)] = rv.Field(i).Uint()
	}
	return out
}

func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// StorageStatus is a node's storage and mail health.
type StorageStatus struct {
	Objects     int64  `json:"objects"`
	Bytes       int64  `json:"bytes"`
	Corrupt     uint64 `json:"corrupt"`        // entries found corrupt and dropped
	Expired     uint64 `json:"expired"`        // objects whose lease ran out
	Stored      uint64 `json:"stored"`         // replica writes made durable
	Refused     uint64 `json:"refused"`        // bad or unwanted objects refused, all reasons
	BadReceipts uint64 `json:"bad_receipts"`   // receipts that failed verification
	BadObjects  uint64 `json:"bad_objects"`    // answers or pushes that failed verification
	Pushes      uint64 `json:"pushes"`         // copies made by replica maintenance
	Users       int    `json:"users"`          // users served
	Delivered   uint64 `json:"delivered"`      // messages delivered to INBOX
	Forged      uint64 `json:"forged"`         // notifications rejected
	SenderFlag  uint64 `json:"sender_flagged"` // messages flagged $Phishing
	LogEntries  uint64 `json:"log_entries"`    // folder log entries written
	ForksMerged uint64 `json:"forks_merged"`

	// Leased storage by kind (immutable, mutable, set, fragment), and the
	// store's work since it opened: synced transactions and writes.
	PerKind []KindUse `json:"per_kind"`
	Syncs   uint64    `json:"syncs"`
	Writes  uint64    `json:"writes"`
	// WriteErrors counts store writes the disk failed (full, I/O error)
	// since the store opened; see the events for when.
	WriteErrors uint64 `json:"write_errors"`
	// Mailboxes: each user served here, with usage and quota.
	Mailboxes []MailboxUse `json:"mailboxes"`
	// Pending: notifications being taken in for the users served here.
	Pending int `json:"pending_notifications"`

	// The archive (Glacier): what waits to be archived here, and what
	// this node holds for others.
	ArchiveQueued    int     `json:"archive_queued"`         // objects not yet sealed into a bundle
	ArchiveOldestSec float64 `json:"archive_oldest_seconds"` // the longest an object has waited
	ArchivePlacing   int     `json:"archive_placing"`        // bundles whose fragments are not all acknowledged
	ArchivedBundles  uint64  `json:"archived_bundles"`       // bundles fully placed
	Fragments        int     `json:"fragments"`              // fragments held for the community
	BadFragments     uint64  `json:"bad_fragments"`          // fragments that failed verification
	Repairs          uint64  `json:"archive_repairs"`        // bundles this node repaired as coordinator
}

// MailboxUse is one user's mail against their quota (post.Account.Usage
// and Quota; a quota of 0 is unlimited).
type MailboxUse struct {
	User  string `json:"user"`
	Bytes int64  `json:"bytes"`
	Quota int64  `json:"quota"`
}

// KindUse is the storage one kind of object takes.
type KindUse struct {
	Kind    string `json:"kind"`
	Objects int64  `json:"objects"`
	Bytes   int64  `json:"bytes"`
}

// Status returns a snapshot of the node. The overlay is read on the
// node's event loop (inside Do), never from the caller's goroutine, so,
// like Do, Status must not be called from the loop itself. A node not
// started yet, or closed, reports Running false and no overlay state.
func (n *Node) Status() Status {
	s := Status{
		ID:          n.ID().String(),
		Short:       n.ID().Short(),
		Addr:        string(n.Addr()),
		Position:    n.ID().Float(),
		LeafSetSize: n.cfg.Overlay.LeafSetSize,
		Left:        []string{},
		Right:       []string{},
		TableRows:   []int{},
		Table:       []string{},
	}
	n.mu.Lock()
	running := n.started && !n.closed
	n.mu.Unlock()
	if !running {
		// Do would wait for Start on a loop that never ran.
		return s
	}
	err := n.Do(func() {
		ov := n.ov
		s.Active = ov.Active()
		l := ov.Leaf()
		s.Left = handleIDs(l.Left())
		s.Right = handleIDs(l.Right())
		s.LeafSet = l.Len()
		t := ov.Table()
		s.TableEntries = t.Len()
		for r := range t.Rows() {
			row := t.Row(r)
			s.TableRows = append(s.TableRows, len(row))
			s.Table = append(s.Table, handleIDs(row)...)
		}
		ost := ov.Stats()
		s.Delivered = ost.Delivered
		s.Unauthenticated, s.MalformedMsgs = ost.Unauthenticated, ost.Malformed
		s.IndirectLinks = ov.IndirectLinks()
		if n.past != nil {
			ps := n.past.Stats()
			ss := &StorageStatus{Stored: ps.Stored, BadReceipts: ps.BadReceipts, BadObjects: ps.BadObjects, Pushes: ps.Pushes}
			for _, r := range ps.Refused {
				ss.Refused += r
			}
			if n.gl != nil {
				q, gs := n.gl.Queues(), n.gl.Stats()
				ss.ArchiveQueued, ss.ArchiveOldestSec, ss.ArchivePlacing = q.Objects, round1(q.Oldest.Seconds()), q.Placing
				ss.ArchivedBundles, ss.BadFragments, ss.Repairs = gs.Archived, gs.BadFragments, gs.Repairs
				ss.Fragments, _ = n.gl.Held()
			}
			if n.post != nil {
				m := n.post.Stats()
				ss.Users = n.post.Users()
				ss.Pending = n.post.Pending()
				ss.Delivered, ss.Forged, ss.SenderFlag, ss.LogEntries, ss.ForksMerged = m.Delivered, m.Forged, m.SenderMismatch, m.Entries, m.ForksMerged
				for _, u := range n.post.Addresses() {
					a := n.post.User(u)
					ss.Mailboxes = append(ss.Mailboxes, MailboxUse{User: u, Bytes: a.Usage(), Quota: a.Quota()})
				}
			}
			s.Storage = ss
		}
	})
	if s.Storage != nil && n.st != nil {
		st := n.st.Stats()
		s.Storage.Objects, s.Storage.Bytes, s.Storage.Corrupt, s.Storage.Expired = st.Objects, st.Bytes, st.Corrupt, st.Expired
		s.Storage.Syncs, s.Storage.Writes, s.Storage.WriteErrors = st.Batches, st.Writes, st.WriteErrors
		for _, k := range st.PerKind {
			s.Storage.PerKind = append(s.Storage.PerKind, KindUse{Kind: k.Kind.String(), Objects: k.Objects, Bytes: k.Bytes})
		}
	}
	s.Running = err == nil
	s.Events = n.events.recent()
	ts := n.tr.Stats()
	s.PeersRefused, s.MalformedFrames = ts.Refused, ts.Malformed
	s.RevocationEpoch = n.verifier.Epoch()
	n.mu.Lock()
	cs := append([]namedCounters(nil), n.counters...)
	n.mu.Unlock()
	for _, c := range cs {
		if s.Servers == nil {
			s.Servers = map[string]map[string]uint64{}
		}
		m := s.Servers[c.name]
		if m == nil {
			m = map[string]uint64{}
			s.Servers[c.name] = m
		}
		for k, v := range counterMap(c.read()) {
			m[k] += v
		}
	}
	return s
}

// handleIDs returns the ids of hs, in order.
func handleIDs(hs []overlay.NodeHandle) []string {
	out := make([]string, 0, len(hs))
	for _, h := range hs {
		out = append(out, h.ID.String())
	}
	return out
}

// StatusReport is what the status page shows: every node it watches,
// sorted by id (their order on the ring).
type StatusReport struct {
	Title   string        `json:"title"`
	Time    string        `json:"time"` // RFC 3339, when the snapshot was taken
	Nodes   []Status      `json:"nodes"`
	Process ProcessStatus `json:"process"`
}

// ProcessStatus is the process the nodes run in: `epost node` runs one,
// `epost demo` all of its nodes in one process.
type ProcessStatus struct {
	RSSBytes        int64 `json:"rss_bytes"` // resident memory (Linux; 0 elsewhere)
	RSSPerNodeBytes int64 `json:"rss_per_node_bytes"`
	HeapBytes       int64 `json:"heap_bytes"` // Go heap in use
	Goroutines      int   `json:"goroutines"`
}

// processStatus reads the process's memory and goroutines.
func processStatus(nodes int) ProcessStatus {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p := ProcessStatus{HeapBytes: int64(ms.HeapInuse), Goroutines: runtime.NumGoroutine(), RSSBytes: residentBytes()}
	if nodes > 0 {
		p.RSSPerNodeBytes = p.RSSBytes / int64(nodes)
	}
	return p
}

// residentBytes is VmRSS from /proc/self/status, 0 where there is none.
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	return 0
}

// Report takes a snapshot of nodes, each read on its own event loop.
func Report(title string, nodes []*Node) StatusReport {
	r := StatusReport{Title: title, Time: time.Now().UTC().Format(time.RFC3339), Nodes: []Status{}}
	for _, nd := range nodes {
		r.Nodes = append(r.Nodes, nd.Status())
	}
	// Hex ids of one length sort like the ids: ring order.
	slices.SortFunc(r.Nodes, func(a, b Status) int { return strings.Compare(a.ID, b.ID) })
	r.Process = processStatus(len(nodes))
	return r
}

// StatusHandler serves the status page of the nodes that nodes returns
// (called per request, so the set may grow):
//
//	/             an HTML page: the ring drawn as SVG, and a table
//	/status.json  the same data as a StatusReport
//	/metrics      the same numbers in Prometheus' text format
//
// Every request reads each node on the node's own event loop, so a slow
// loop delays the page, never the other way round. Serve it on loopback:
// the page has no authentication.
func StatusHandler(title string, nodes func() []*Node) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, _ *http.Request) {
		b, err := json.MarshalIndent(Report(title, nodes()), "", "  ")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(append(b, '\n'))
	})
	mux.Handle("GET /metrics", MetricsHandler(title, nodes))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		var buf bytes.Buffer
		if err := statusPage.Execute(&buf, newPageData(Report(title, nodes()))); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(buf.Bytes())
	})
	return mux
}

// Geometry of the ring drawing, in SVG user units.
const (
	ringSize   = 620.0
	ringCenter = ringSize / 2
	ringRadius = 210.0
	labelGap   = 26.0
)

// pageNode is a node as the page draws it.
type pageNode struct {
	Status
	X, Y           float64 // position on the circle
	LabelX, LabelY float64
	Anchor         string // text-anchor of the label
	LeafSetAttr    string // space-separated leaf-set ids, for highlighting
	TableAttr      string // space-separated routing-table ids
	RowFill        string // "3 1" style routing-table fill per row
}

// pageLine joins a node to one of its leaf-set members.
type pageLine struct {
	From, To       string
	X1, Y1, X2, Y2 float64
}

type pageData struct {
	Title, Time        string
	Nodes              []pageNode
	Lines              []pageLine
	Size, Center, Rad  float64
	Running, Active    int
	LeafOK             bool // every running node's leaf set is as full as the ring allows
	LeafTotal, LeafMax int
	Process            ProcessStatus
	MiB                float64     // resident memory in MiB
	Events             []pageEvent // newest first, all nodes
}

// pageEvent is one recent event on the page, with its node.
type pageEvent struct {
	Event
	Node string
}

// maxPageEvents bounds the events listed on the page.
const maxPageEvents = 20

// newPageData places the nodes on the circle by id (0 at the top,
// clockwise, as the ring is usually drawn) and lists the leaf-set lines.
func newPageData(r StatusReport) pageData {
	d := pageData{Title: r.Title, Time: r.Time, Size: ringSize, Center: ringCenter, Rad: ringRadius, LeafOK: true,
		Process: r.Process, MiB: round1(float64(r.Process.RSSBytes) / (1 << 20))}
	for _, s := range r.Nodes {
		for _, e := range s.Events {
			d.Events = append(d.Events, pageEvent{e, s.Short})
		}
	}
	// RFC 3339 times in UTC sort as strings.
	slices.SortStableFunc(d.Events, func(a, b pageEvent) int { return strings.Compare(b.Time, a.Time) })
	if len(d.Events) > maxPageEvents {
		d.Events = d.Events[:maxPageEvents]
	}
	pos := map[string][2]float64{}
	running := 0
	for _, s := range r.Nodes {
		if s.Running {
			running++
		}
	}
	for _, s := range r.Nodes {
		a := 2*math.Pi*s.Position - math.Pi/2
		x, y := ringCenter+ringRadius*math.Cos(a), ringCenter+ringRadius*math.Sin(a)
		pn := pageNode{
			Status: s,
			X:      round1(x), Y: round1(y),
			LabelX: round1(ringCenter + (ringRadius+labelGap)*math.Cos(a)),
			LabelY: round1(ringCenter + (ringRadius+labelGap)*math.Sin(a) + 4),
			Anchor: "middle",
		}
		switch c := math.Cos(a); {
		case c > 0.3:
			pn.Anchor = "start"
		case c < -0.3:
			pn.Anchor = "end"
		}
		pn.LeafSetAttr = strings.Join(union(s.Left, s.Right), " ")
		pn.TableAttr = strings.Join(s.Table, " ")
		var fill []string
		for _, c := range s.TableRows {
			fill = append(fill, strconv.Itoa(c))
		}
		pn.RowFill = strings.Join(fill, " ")
		pos[s.ID] = [2]float64{pn.X, pn.Y}
		d.Nodes = append(d.Nodes, pn)
		if s.Running {
			d.Running++
			if s.Active {
				d.Active++
			}
			// What a complete leaf set holds when every running node is
			// on this page: all others, up to L.
			want := min(s.LeafSetSize, running-1)
			d.LeafTotal += s.LeafSet
			d.LeafMax += want
			if s.LeafSet < want {
				d.LeafOK = false
			}
		}
	}
	for _, n := range d.Nodes {
		from := pos[n.ID]
		for _, m := range union(n.Left, n.Right) {
			to, ok := pos[m]
			if !ok {
				continue // a member this page does not watch
			}
			d.Lines = append(d.Lines, pageLine{From: n.ID, To: m, X1: from[0], Y1: from[1], X2: to[0], Y2: to[1]})
		}
	}
	return d
}

// union returns a followed by the elements of b not in a.
func union(a, b []string) []string {
	out := append([]string(nil), a...)
	for _, x := range b {
		if !slices.Contains(a, x) {
			out = append(out, x)
		}
	}
	return out
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

// shortID shortens a 32-hex-digit id for display, as id.ID.Short does.
func shortID(s string) string {
	if x, err := id.Parse(s); err == nil {
		return x.Short()
	}
	return s
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"shorts": func(ids []string) string {
		out := make([]string, len(ids))
		for i, x := range ids {
			out[i] = shortID(x)
		}
		return strings.Join(out, " ")
	},
}).Parse(statusHTML))

// statusHTML is the page. Everything that changes lives in #live, which
// the script replaces with a fresh copy of the page every 2 s (one
// renderer, here, for the first view and the updates); the selection is
// kept across updates. Without JavaScript the page reloads every 5 s.
const statusHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Title}}</title>
<noscript><meta http-equiv="refresh" content="5"></noscript>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .3em; }
.summary { color: #555; margin-bottom: 1em; }
#stale { color: #c03; }
.wrap { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
svg { flex: none; }
circle.ring { fill: none; stroke: #bbb; stroke-width: 2; }
line.leaf { stroke: #4a7bd0; stroke-opacity: .2; stroke-width: 1; }
line.leaf.hl { stroke-opacity: .9; stroke-width: 2.5; }
g.node circle { fill: #2e9e4f; stroke: #fff; stroke-width: 2; cursor: pointer; }
g.node.inactive circle { fill: #e0a100; }
g.node.stopped circle { fill: #bbb; }
g.node.leaf circle { fill: #4a7bd0; }
g.node.table circle { stroke: #c03; stroke-width: 3; }
g.node.sel circle { fill: #111; }
svg text { font: 12px ui-monospace, monospace; fill: #333; }
table { border-collapse: collapse; }
th, td { text-align: left; vertical-align: top; padding: .3em .7em; border-bottom: 1px solid #eee; }
td { font: 12px ui-monospace, monospace; }
tbody tr { cursor: pointer; }
tr.sel { background: #fff5cc; }
tr.leaf { background: #e8f0fc; }
td.addr { max-width: 26em; overflow-wrap: anywhere; }
.members { color: #777; font-size: 11px; }
.legend { color: #555; font-size: 12px; max-width: 60em; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<div id="live">
<div class="summary">{{.Running}} nodes running, {{.Active}} active; leaf sets {{if .LeafOK}}complete{{else}}filling ({{.LeafTotal}} of {{.LeafMax}} members){{end}}. Snapshot {{.Time}}. <span id="stale"></span></div>
<div class="wrap">
<svg width="{{.Size}}" height="{{.Size}}" viewBox="0 0 {{.Size}} {{.Size}}" role="img" aria-label="the ring">
<circle class="ring" cx="{{.Center}}" cy="{{.Center}}" r="{{.Rad}}"/>
{{range .Lines}}<line class="leaf" data-from="{{.From}}" data-to="{{.To}}" x1="{{.X1}}" y1="{{.Y1}}" x2="{{.X2}}" y2="{{.Y2}}"/>
{{end}}{{range .Nodes}}<g class="node{{if not .Running}} stopped{{else if not .Active}} inactive{{end}}" data-id="{{.ID}}" data-leaf="{{.LeafSetAttr}}" data-table="{{.TableAttr}}"><title>{{.ID}}</title><circle cx="{{.X}}" cy="{{.Y}}" r="9"/><text x="{{.LabelX}}" y="{{.LabelY}}" text-anchor="{{.Anchor}}">{{.Short}}</text></g>
{{end}}</svg>
<table>
<thead><tr><th>id</th><th>address</th><th>active</th><th>leaf set</th><th>routing table (per row)</th><th>delivered</th><th>store</th><th>archive</th></tr></thead>
<tbody>
{{range .Nodes}}<tr data-id="{{.ID}}"><td title="{{.ID}}">{{.Short}}</td><td class="addr">{{.Addr}}</td><td>{{if not .Running}}stopped{{else if .Active}}yes{{else}}joining{{end}}</td><td>{{.LeafSet}} / {{.LeafSetSize}}<div class="members">left: {{shorts .Left}}<br>right: {{shorts .Right}}</div></td><td>{{.TableEntries}} [{{.RowFill}}]</td><td>{{.Delivered}}</td><td>{{with .Storage}}{{.Objects}} objects, {{.Bytes}} B{{if .Pending}}; {{.Pending}} pending{{end}}{{if .WriteErrors}}; <b>{{.WriteErrors}} write errors</b>{{end}}{{range .Mailboxes}}<div class="members">{{.User}}: {{.Bytes}} B{{if .Quota}} of {{.Quota}}{{end}}</div>{{end}}{{else}}-{{end}}</td><td>{{with .Storage}}{{.Fragments}} fragments held; {{.ArchiveQueued}} queued{{if .ArchiveQueued}} (oldest {{.ArchiveOldestSec}} s){{end}}{{if .BadFragments}}; {{.BadFragments}} bad{{end}}{{else}}-{{end}}</td></tr>
{{end}}</tbody>
</table>
</div>
</div>
{{if .Events}}<h3>Recent events</h3>
<ul class="events">{{range .Events}}<li><span class="t">{{.Time}}</span> {{.Node}} {{.Level}} {{.Msg}} <span class="attrs">{{.Attrs}}</span></li>
{{end}}</ul>{{end}}
{{if .MiB}}<p class="legend">Process: {{.MiB}} MiB resident, {{.Process.Goroutines}} goroutines.</p>{{end}}
<p class="legend">Each node sits on the circle at its 128-bit id (0 at the top, clockwise); lines join
every node to its leaf-set members. Green: active; yellow: joining; grey: stopped. Click a node or a
row to select it: its leaf set turns blue and its routing-table entries get a red ring.
Data: <a href="status.json">status.json</a>.</p>
<script>
(function () {
  var sel = null;
  function apply() {
    var live = document.getElementById('live');
    var node = sel ? live.querySelector('g.node[data-id="' + sel + '"]') : null;
    if (!node) { sel = null; }
    var leaf = node ? node.getAttribute('data-leaf').split(' ') : [];
    var table = node ? node.getAttribute('data-table').split(' ') : [];
    live.querySelectorAll('[data-id]').forEach(function (e) {
      var id = e.getAttribute('data-id');
      e.classList.toggle('sel', id === sel);
      e.classList.toggle('leaf', leaf.indexOf(id) >= 0);
      e.classList.toggle('table', table.indexOf(id) >= 0);
    });
    live.querySelectorAll('line.leaf').forEach(function (e) {
      e.classList.toggle('hl', e.getAttribute('data-from') === sel);
    });
  }
  document.addEventListener('click', function (ev) {
    var e = ev.target.closest ? ev.target.closest('#live [data-id]') : null;
    if (!e) { return; }
    var id = e.getAttribute('data-id');
    sel = (sel === id) ? null : id;
    apply();
  });
  function refresh() {
    fetch(location.pathname, {cache: 'no-store'}).then(function (r) {
      if (!r.ok) { throw new Error(r.status); }
      return r.text();
    }).then(function (t) {
      var fresh = new DOMParser().parseFromString(t, 'text/html').getElementById('live');
      if (fresh) {
        document.getElementById('live').innerHTML = fresh.innerHTML;
        apply();
      }
    }).catch(function () {
      var s = document.getElementById('stale');
      if (s) { s.textContent = 'Not updating: the nodes stopped or cannot be reached.'; }
    });
  }
  setInterval(refresh, 2000);
})();
</script>
</body>
</html>
`
