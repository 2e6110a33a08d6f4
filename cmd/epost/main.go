// Command epost is the one binary of epost, serverless email: it runs a
// node, the demo community, simulator experiments and the tools that manage
// a community's certificates. `epost help` lists the subcommands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"syscall"

	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/scenario"
	"github.com/epost-mail/epost/internal/store"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	cs := []command{
		{"ca", "community CA: `ca init`, `ca issue-node --name NAME`, `ca revoke`, `ca rotate-node`, `ca backup`, `ca restore`", cmdCA},
		{"user", "users: `user new ADDRESS` (prints a recovery code once), `user passwd`, `user recover`, `user rotate-key ADDRESS`", cmdUser},
		{"demo", "run a community of real nodes on this machine, with a status page: `demo [--nodes N]`", cmdDemo},
		{"sim", "run a simulator experiment: `sim SCENARIO [--nodes N] [--seed S] [--json]`", scenario.Main},
		{"bench", "end-to-end mail latency and throughput of any SMTP+IMAP pair: `bench --smtp A --imap A --from U --to U ...`", cmdBench},
		{"version", "print the version", cmdVersion},
		{"init", "write a commented node configuration: `init --node NAME [--user ADDRESS]...`", cmdInit},
		{"node", "run one node: `node --config FILE`", cmdNode},
		{"status", "print a running node's status: `status [--url http://127.0.0.1:8025/]`", cmdStatus},
		{"gateway", "print the DNS records for a community's gateway: `gateway dns --domain D --mx HOST`", cmdGateway},
		{"import", "import an mbox or maildir into a user's mailbox over IMAP: `import --user U --password-file F mbox|maildir PATH`", cmdImport},
		{"export", "export a user's mailbox to a maildir over IMAP: `export --user U --password-file F --maildir PATH`", cmdExport},
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	return cs
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func cmdVersion(_ []string, stdout, _ io.Writer) error {
	fmt.Fprintf(stdout, "epost %s\n", version)
	return nil
}

func help(w io.Writer) {
	fmt.Fprintln(w, "epost: email with no mail servers.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "usage: epost COMMAND [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "  help     show this list")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "`epost help COMMAND` or `epost COMMAND --help` shows a command's flags.")
}

// newLogger makes the logger a command's nodes write to w: text lines by
// default, one JSON object per line with format "json" (for log
// collectors).
func newLogger(w io.Writer, level slog.Level, format string) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// errUsage marks a bad command line: exit status 2, like flag.
var errUsage = errors.New("usage")

// run is main without the process: testable.
func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		help(stderr)
		return fmt.Errorf("%w: no command given", errUsage)
	}
	switch args[0] {
	case "help", "-h", "--help":
		if len(args) > 1 {
			// `epost help COMMAND` is `epost COMMAND --help`, on stdout.
			for _, c := range commands() {
				if c.name == args[1] {
					return c.run([]string{"--help"}, stdout, stdout)
				}
			}
		}
		help(stdout)
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	help(stderr)
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage), errors.Is(err, scenario.ErrUsage):
		fmt.Fprintln(os.Stderr, "epost:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "epost:", err)
		if h := hint(err); h != "" {
			fmt.Fprintln(os.Stderr, "epost:", h)
		}
		os.Exit(1)
	}
}

// hint says what a user can do about the errors people meet most, in one
// line; "" when there is nothing general to say.
func hint(err error) string {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return "that address is taken: another program (or another epost) listens there; stop it, or choose another port in the configuration or flags"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "this machine has no such address: listen on 127.0.0.1, 0.0.0.0 or one of its own addresses"
	case errors.Is(err, identity.ErrBadRecoveryCode):
		return "the recovery code is mistyped: it is the 32 characters `epost user new` (or, for the CA, `epost ca backup`) printed (dashes and case do not matter)"
	case errors.Is(err, identity.ErrWrongRecoveryCode):
		return "the recovery code is valid but belongs to another backup: check the address and the code"
	case errors.Is(err, identity.ErrWrongCA):
		return "this certificate is from another community: use the certificate its CA (epost ca issue-node / user new) made for this one"
	case errors.Is(err, identity.ErrKeyMismatch):
		return "the certificate does not belong to this key: issue a new certificate for the key (epost ca issue-node)"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, store.ErrFull):
		return "the disk is full: free space (or raise the store's size limit); nothing acknowledged has been lost"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied: run as the user who owns the data directory, or fix its permissions"
	}
	return ""
}
