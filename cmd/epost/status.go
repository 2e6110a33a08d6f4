package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/epost-mail/epost/internal/demo"
	"github.com/epost-mail/epost/internal/node"
)

// cmdStatus prints a running node's (or demo's) status page in the
// terminal.
func cmdStatus(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("status", "[--url URL]", stderr)
	url := flags.String("url", "http://127.0.0.1:8025/", "the node's status page (the status address in its config)")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		flags.Usage()
		return fmt.Errorf("%w: status: unexpected argument %q", errUsage, pos[0])
	}
	cl := &http.Client{Timeout: 10 * time.Second}
	res, err := cl.Get(strings.TrimRight(*url, "/") + "/status.json")
	if err != nil {
		return fmt.Errorf("status: %w (is the node running, with a status page at %s?)", err, *url)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status: %s answered %s", *url, res.Status)
	}
	var r node.StatusReport
	if err := json.NewDecoder(io.LimitReader(res.Body, 16<<20)).Decode(&r); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	fmt.Fprintf(stdout, "%s, %s\n", r.Title, r.Time)
	if p := r.Process; p.RSSBytes > 0 {
		fmt.Fprintf(stdout, "process: %.1f MiB resident (%.1f MiB per node), %.1f MiB Go heap, %d goroutines\n",
			float64(p.RSSBytes)/(1<<20), float64(p.RSSPerNodeBytes)/(1<<20), float64(p.HeapBytes)/(1<<20), p.Goroutines)
	}
	if err := demo.WriteView(stdout, r); err != nil {
		return err
	}
	for _, s := range r.Nodes {
		for i, e := range s.Events {
			if i == 5 {
				break
			}
			fmt.Fprintf(stdout, "  %s  %s %-5s %s %s\n", s.Short, e.Time, e.Level, e.Msg, e.Attrs)
		}
		fmt.Fprintf(stdout, "  %s  revocation epoch %d; %d peers refused\n", s.Short, s.RevocationEpoch, s.PeersRefused)
		if st := s.Storage; st != nil {
			fmt.Fprintf(stdout, "  %s  store: %d objects, %d bytes (%d corrupt dropped, %d expired, %d write errors); replicas: %d stored, %d refused, %d bad receipts, %d copies made\n",
				s.Short, st.Objects, st.Bytes, st.Corrupt, st.Expired, st.WriteErrors, st.Stored, st.Refused, st.BadReceipts, st.Pushes)
			for _, m := range st.Mailboxes {
				fmt.Fprintf(stdout, "  %s  mailbox %s: %d bytes of %d (0: unlimited)\n", s.Short, m.User, m.Bytes, m.Quota)
			}
			fmt.Fprintf(stdout, "  %s  mail: %d users, %d delivered, %d pending, %d forged rejected, %d flagged, %d log entries, %d forks merged\n",
				s.Short, st.Users, st.Delivered, st.Pending, st.Forged, st.SenderFlag, st.LogEntries, st.ForksMerged)
			fmt.Fprintf(stdout, "  %s  archive: %d objects queued (oldest %.0f s), %d bundles placing, %d archived; %d fragments held, %d bad\n",
				s.Short, st.ArchiveQueued, st.ArchiveOldestSec, st.ArchivePlacing, st.ArchivedBundles, st.Fragments, st.BadFragments)
		}
	}
	return nil
}
