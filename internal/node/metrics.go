package node

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsCollector exports the status of a set of nodes in Prometheus'
// format, read afresh (on each node's loop) at every scrape.
type metricsCollector struct {
	title string
	nodes func() []*Node
}

type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(Status) (float64, bool)
}

func storageValue(f func(*StorageStatus) float64) func(Status) (float64, bool) {
	return func(s Status) (float64, bool) {
		if s.Storage == nil {
			return 0, false
		}
		return f(s.Storage), true
	}
}

func desc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("epost_"+name, help, []string{"node"}, nil)
}

var metrics = []metric{
	{desc("node_active", "1 if the node has joined the ring and may deliver"), prometheus.GaugeValue, func(s Status) (float64, bool) { return b2f(s.Active), s.Running }},
	{desc("leaf_set_members", "distinct leaf-set members"), prometheus.GaugeValue, func(s Status) (float64, bool) { return float64(s.LeafSet), s.Running }},
	{desc("routing_table_entries", "filled routing-table slots"), prometheus.GaugeValue, func(s Status) (float64, bool) { return float64(s.TableEntries), s.Running }},
	{desc("indirect_links", "nodes reached only through a helper"), prometheus.GaugeValue, func(s Status) (float64, bool) { return float64(s.IndirectLinks), s.Running }},
	{desc("peers_refused_total", "connections refused: certificate from another community, key mismatch, bad hello"), prometheus.CounterValue, func(s Status) (float64, bool) { return float64(s.PeersRefused), true }},
	{desc("malformed_frames_total", "transport frames dropped as malformed"), prometheus.CounterValue, func(s Status) (float64, bool) { return float64(s.MalformedFrames), true }},
	{desc("overlay_rejected_total", "overlay messages dropped as unauthenticated or malformed"), prometheus.CounterValue, func(s Status) (float64, bool) { return float64(s.Unauthenticated + s.MalformedMsgs), s.Running }},
	{desc("overlay_delivered_total", "overlay messages delivered here as root"), prometheus.CounterValue, func(s Status) (float64, bool) { return float64(s.Delivered), s.Running }},
	{desc("store_objects", "objects in the local store"), prometheus.GaugeValue, storageValue(func(s *StorageStatus) float64 { return float64(s.Objects) })},
	{desc("store_bytes", "bytes of objects in the local store"), prometheus.GaugeValue, storageValue(func(s *StorageStatus) float64 { return float64(s.Bytes) })},
	{desc("store_corrupt_total", "entries found corrupt and dropped"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.Corrupt) })},
	{desc("store_expired_total", "objects whose lease ran out"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.Expired) })},
	{desc("past_stored_total", "replica writes made durable"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.Stored) })},
	{desc("past_refused_total", "objects refused (bad hash, signature, size, lease, rollback, flood)"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.Refused) })},
	{desc("past_bad_receipts_total", "storage receipts that failed verification"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.BadReceipts) })},
	{desc("past_bad_objects_total", "objects read or pushed that failed verification"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.BadObjects) })},
	{desc("past_pushes_total", "copies made by replica maintenance"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.Pushes) })},
	{desc("archive_queued", "objects waiting to be sealed into an archive bundle"), prometheus.GaugeValue, storageValue(func(s *StorageStatus) float64 { return float64(s.ArchiveQueued) })},
	{desc("archive_oldest_seconds", "longest wait of an object in the archive queue"), prometheus.GaugeValue, storageValue(func(s *StorageStatus) float64 { return s.ArchiveOldestSec })},
	{desc("archive_bundles_total", "archive bundles fully placed"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.ArchivedBundles) })},
	{desc("archive_fragments", "archive fragments held for the community"), prometheus.GaugeValue, storageValue(func(s *StorageStatus) float64 { return float64(s.Fragments) })},
	{desc("archive_bad_fragments_total", "archive fragments that failed verification"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.BadFragments) })},
	{desc("store_syncs_total", "synced store transactions since the store opened"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.Syncs) })},
	{desc("store_writes_total", "store writes completed since the store opened"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.Writes) })},
	{desc("store_write_errors_total", "store writes the disk failed (full, I/O error) since the store opened"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.WriteErrors) })},
	{desc("mail_pending_notifications", "notifications being taken in for the users served"), prometheus.GaugeValue, storageValue(func(s *StorageStatus) float64 { return float64(s.Pending) })},
	{desc("mail_users", "users served"), prometheus.GaugeValue, storageValue(func(s *StorageStatus) float64 { return float64(s.Users) })},
	{desc("mail_delivered_total", "messages delivered to a mailbox"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.Delivered) })},
	{desc("mail_forged_total", "notifications rejected as forged"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.Forged) })},
	{desc("mail_sender_flagged_total", "messages flagged because From is not their signed sender"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.SenderFlag) })},
	{desc("mail_log_entries_total", "folder log entries written"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.LogEntries) })},
	{desc("mail_forks_merged_total", "diverged folder logs merged"), prometheus.CounterValue, storageValue(func(s *StorageStatus) float64 { return float64(s.ForksMerged) })},
}

// serverDesc carries the mail front-ends' counters, one series per
// front-end and counter.
var serverDesc = prometheus.NewDesc("epost_server_events_total", "mail front-end counters: logins, refusals of hostile clients, messages accepted", []string{"node", "server", "counter"}, nil)

// Each mailbox's usage and quota, one series per user.
var (
	mailboxDesc = prometheus.NewDesc("epost_mail_user_bytes", "a user's mail in bytes (distinct message bodies in their folders)", []string{"node", "user"}, nil)
	quotaDesc   = prometheus.NewDesc("epost_mail_user_quota_bytes", "a user's quota in bytes; 0 is unlimited", []string{"node", "user"}, nil)
)

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range metrics {
		ch <- m.desc
	}
	ch <- serverDesc
	ch <- processDesc
	ch <- mailboxDesc
	ch <- quotaDesc
}

// processDesc: the process's resident memory, for the per-node figure.
var processDesc = prometheus.NewDesc("epost_process_resident_bytes", "resident memory of the process the nodes run in", nil, nil)

func (c metricsCollector) Collect(ch chan<- prometheus.Metric) {
	r := Report(c.title, c.nodes())
	if r.Process.RSSBytes > 0 {
		ch <- prometheus.MustNewConstMetric(processDesc, prometheus.GaugeValue, float64(r.Process.RSSBytes))
	}
	for _, s := range r.Nodes {
		for _, m := range metrics {
			if v, ok := m.value(s); ok {
				ch <- prometheus.MustNewConstMetric(m.desc, m.kind, v, s.Short)
			}
		}
		if s.Storage != nil {
			for _, m := range s.Storage.Mailboxes {
				ch <- prometheus.MustNewConstMetric(mailboxDesc, prometheus.GaugeValue, float64(m.Bytes), s.Short, m.User)
				ch <- prometheus.MustNewConstMetric(quotaDesc, prometheus.GaugeValue, float64(m.Quota), s.Short, m.User)
			}
		}
		for server, cs := range s.Servers {
			for name, v := range cs {
				ch <- prometheus.MustNewConstMetric(serverDesc, prometheus.CounterValue, float64(v), s.Short, server, name)
			}
		}
	}
}

// MetricsHandler serves the nodes' metrics in Prometheus' text format.
func MetricsHandler(title string, nodes func() []*Node) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(metricsCollector{title: title, nodes: nodes})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
