package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// CommandFilter is a Filter that runs a program per message: the message
// on its standard input, its score as the first word of its standard
// output. "5.3/5.0", as `spamc -c` prints, reads as 5.3. A program that
// exits non-zero, prints no number, or outlives Timeout gives no score
// (an error, which the server logs and counts as 0).
type CommandFilter struct {
	// Argv is the program and its arguments (no shell).
	Argv []string
	// Timeout bounds one run. Default DefaultFilterTimeout.
	Timeout time.Duration
}

// DefaultFilterTimeout bounds a filter run: well inside the check
// timeout, so a hung filter delays a message, never loses it.
const DefaultFilterTimeout = 10 * time.Second

// maxFilterOutput bounds what is kept of a filter's output.
const maxFilterOutput = 4096

func (f *CommandFilter) Score(msg []byte) (float64, error) {
	if len(f.Argv) == 0 {
		return 0, errors.New("junk filter: no command")
	}
	timeout := f.Timeout
	if timeout <= 0 {
		timeout = DefaultFilterTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.Argv[0], f.Argv[1:]...)
	cmd.Stdin = bytes.NewReader(msg)
	var out, errOut capped
	cmd.Stdout, cmd.Stderr = &out, &errOut
	// A killed filter's children may hold its pipes open; stop waiting
	// for them soon after.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return 0, fmt.Errorf("junk filter %s: no answer within %v", f.Argv[0], timeout)
	}
	if err != nil {
		return 0, fmt.Errorf("junk filter %s: %w: %s", f.Argv[0], err, strings.TrimSpace(errOut.String()))
	}
	word, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
	if fs := strings.Fields(word); len(fs) > 0 {
		word = fs[0]
	}
	word, _, _ = strings.Cut(word, "/")
	s, err := strconv.ParseFloat(word, 64)
	if err != nil || math.IsNaN(s) || math.IsInf(s, 0) {
		return 0, fmt.Errorf("junk filter %s: want a score on standard output, got %q", f.Argv[0], out.String())
	}
	return s, nil
}

// capped keeps the first maxFilterOutput bytes written to it and
// discards the rest, so that a chatty filter cannot fill memory.
type capped struct{ b bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if room := maxFilterOutput - c.b.Len(); room > 0 {
		c.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (c *capped) String() string { return c.b.String() }
