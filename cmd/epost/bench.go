package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/epost-mail/epost/internal/mailbench"
)

// cmdBench is `epost bench`: end-to-end latency and throughput through
// any SMTP submission server and IMAP server, epost or not.
func cmdBench(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("bench", "--smtp HOST:PORT --imap HOST:PORT --from ADDR --from-pass P --to ADDR --to-pass P [--messages M] [--size BYTES] [--concurrency C] [--json]", stderr)
	usage := flags.Usage
	flags.Usage = func() {
		usage()
		fmt.Fprintln(flags.Output(), `
Submits M messages as --from over SMTP (AUTH PLAIN) and times each from the
start of its submission until it is visible in --to's INBOX over IMAP (IDLE,
or polling when the server has no IDLE). Prints the p50/p90/p99 latency, the
throughput over the whole run and the errors. It speaks only the standard
protocols, so it measures any mail server the same way.`)
	}
	var cfg mailbench.Config
	flags.StringVar(&cfg.SMTP, "smtp", "", "SMTP submission server, host:port")
	flags.StringVar(&cfg.IMAP, "imap", "", "IMAP server, host:port")
	flags.StringVar(&cfg.From, "from", "", "sender address (SMTP AUTH user)")
	flags.StringVar(&cfg.FromPass, "from-pass", "", "sender's password")
	flags.StringVar(&cfg.To, "to", "", "recipient address (IMAP login)")
	flags.StringVar(&cfg.ToPass, "to-pass", "", "recipient's password")
	flags.IntVar(&cfg.Messages, "messages", 100, "messages to send")
	flags.IntVar(&cfg.Size, "size", 10240, "message size in bytes")
	flags.IntVar(&cfg.Concurrency, "concurrency", 1, "parallel SMTP sessions")
	flags.StringVar(&cfg.SMTPTLS, "smtp-tls", mailbench.TLSAuto, "SMTP TLS: auto (STARTTLS only when AUTH needs it), starttls, tls or none")
	flags.StringVar(&cfg.IMAPTLS, "imap-tls", mailbench.TLSAuto, "IMAP TLS: auto (STARTTLS only when LOGIN needs it), starttls, tls or none")
	flags.BoolVar(&cfg.Insecure, "insecure", false, "do not verify certificates (always the case on loopback)")
	flags.BoolVar(&cfg.Poll, "poll", false, "poll the INBOX every 20 ms instead of using IDLE")
	flags.DurationVar(&cfg.Timeout, "timeout", time.Minute, "how long to wait for the last message after the last submission")
	asJSON := flags.Bool("json", false, "print one JSON object")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		flags.Usage()
		return fmt.Errorf("%w: bench: unexpected argument %q", errUsage, pos[0])
	}
	if cfg.SMTP == "" || cfg.IMAP == "" || cfg.From == "" || cfg.To == "" {
		flags.Usage()
		return fmt.Errorf("%w: bench: --smtp, --imap, --from and --to are required", errUsage)
	}
	if cfg.Messages < 1 || cfg.Concurrency < 1 || cfg.Size < 0 {
		return fmt.Errorf("%w: bench: --messages and --concurrency must be positive", errUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := mailbench.Run(ctx, cfg)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if *asJSON {
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	mailbench.Format(stdout, res)
	return nil
}
