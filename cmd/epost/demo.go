package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/epost-mail/epost/internal/scenario"
)

// cmdDemo starts a demo community. Until the networked node exists it
// shows the part that runs today: a simulated overlay of --nodes nodes.
func cmdDemo(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("epost demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodes := fs.Int("nodes", 8, "number of nodes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "epost demo: %d nodes form a Pastry ring in the simulator.\n", *nodes)
	fmt.Fprintln(stdout, "(The networked demo with IMAP and SMTP per user comes with the node runtime.)")
	fmt.Fprintln(stdout)
	res, err := scenario.RunRouting(scenario.RoutingConfig{Nodes: *nodes, Seed: 1, Lookups: 100 * *nodes, JoinInterval: 100e3, SettleMinutes: 1})
	if err != nil {
		return err
	}
	return res.WriteTable(stdout)
}
