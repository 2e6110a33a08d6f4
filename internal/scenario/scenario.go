// Package scenario holds the experiments `epost sim` runs. Each scenario
// wires real protocol cores onto the simulator engine (internal/sim),
// drives a workload, measures, and reports one Result: a readable table or
// exactly one JSON object.
//
// Invariants: a scenario's measured quantities depend only on its flags
// and seed (same seed, same numbers), except the fields that describe the
// machine running it (wall time, events per second, heap), which are
// marked as such in their names.
package scenario

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/sim"
)

// Scenario is one experiment.
type Scenario struct {
	Name    string
	Summary string
	// Setup declares the scenario's flags on fs and returns the function
	// that runs it once the flags are parsed.
	Setup func(fs *flag.FlagSet) func() (*Result, error)
}

// All returns the scenarios, sorted by name.
func All() []Scenario {
	all := []Scenario{pingScenario(), routingScenario(), churnScenario(), partitionScenario(), anomalyScenario(), comatoseScenario(), slowScenario(), storageScenario(), leasesScenario(), glacierScenario(), mailScenario()}
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	return all
}

// ErrUsage is returned for a bad command line; the message says why.
var ErrUsage = errors.New("usage")

// Main runs `epost sim` with args (the scenario name, then its flags).
func Main(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return fmt.Errorf("%w: epost sim needs a scenario", ErrUsage)
		}
		return nil
	}
	for _, sc := range All() {
		if sc.Name != args[0] {
			continue
		}
		fs := flag.NewFlagSet("epost sim "+sc.Name, flag.ContinueOnError)
		fs.SetOutput(stderr)
		asJSON := fs.Bool("json", false, "print exactly one JSON object instead of a table")
		run := sc.Setup(fs)
		if err := fs.Parse(args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return fmt.Errorf("%w: %v", ErrUsage, err)
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
		}
		res, err := run()
		if err != nil {
			return fmt.Errorf("sim %s: %w", sc.Name, err)
		}
		if *asJSON {
			return res.WriteJSON(stdout)
		}
		return res.WriteTable(stdout)
	}
	usage(stderr)
	return fmt.Errorf("%w: unknown scenario %q", ErrUsage, args[0])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: epost sim SCENARIO [--nodes N] [--seed S] [--json] [flags]")
	fmt.Fprintln(w, "scenarios:")
	for _, sc := range All() {
		fmt.Fprintf(w, "  %-10s %s\n", sc.Name, sc.Summary)
	}
	fmt.Fprintln(w, "`epost sim SCENARIO --help` lists a scenario's flags.")
}

// Result is a scenario's measurements as ordered named fields.
type Result struct {
	keys []string
	vals map[string]any
}

// Set records a field; a second Set of one name replaces the value and
// keeps the first position.
func (r *Result) Set(name string, v any) {
	if r.vals == nil {
		r.vals = map[string]any{}
	}
	if _, ok := r.vals[name]; !ok {
		r.keys = append(r.keys, name)
	}
	r.vals[name] = v
}

// Get returns a field's value.
func (r *Result) Get(name string) any { return r.vals[name] }

// MarshalJSON keeps the fields in the order they were set.
func (r *Result) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range r.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		vb, err := json.Marshal(r.vals[k])
		if err != nil {
			return nil, fmt.Errorf("scenario: field %s: %w", k, err)
		}
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// WriteJSON prints the result as one JSON object and a newline.
func (r *Result) WriteJSON(w io.Writer) error {
	b, err := r.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// WriteTable prints one aligned "field value" line per field.
func (r *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, k := range r.keys {
		v := r.vals[k]
		s := fmt.Sprint(v)
		if f, ok := v.(float64); ok {
			s = strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.6f", f), "0"), ".")
		}
		fmt.Fprintf(tw, "%s\t%s\n", k, s)
	}
	return tw.Flush()
}

// Meter measures the engine's speed and the process's peak heap while a
// simulation runs. Heap samples are taken every virtual interval.
type Meter struct {
	s        *sim.Sim
	start    time.Time
	events0  uint64
	peakHeap uint64
	interval env.Duration
	wall     time.Duration
	events   uint64
	stopped  bool
}

// StartMeter begins measuring s, sampling the heap every interval of
// virtual time.
func StartMeter(s *sim.Sim, interval env.Duration) *Meter {
	m := &Meter{s: s, start: time.Now(), events0: s.Stats().Events, interval: interval}
	m.sample()
	s.After(interval, m.tick)
	return m
}

func (m *Meter) tick() {
	if m.stopped {
		return
	}
	m.sample()
	m.s.After(m.interval, m.tick)
}

func (m *Meter) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > m.peakHeap {
		m.peakHeap = ms.HeapAlloc
	}
}

// Stop ends the measurement.
func (m *Meter) Stop() {
	if m.stopped {
		return
	}
	m.sample()
	m.stopped = true
	m.wall = time.Since(m.start)
	m.events = m.s.Stats().Events - m.events0
}

// Report adds the machine-dependent fields to r.
func (m *Meter) Report(r *Result) {
	m.Stop()
	r.Set("events", m.events)
	r.Set("wall_seconds", round(m.wall.Seconds(), 3))
	r.Set("events_per_s", round(float64(m.events)/m.wall.Seconds(), 0))
	r.Set("peak_heap_bytes", m.peakHeap)
}

// HeapInUse returns the live heap after a full collection.
func HeapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func round(v float64, digits int) float64 {
	p := 1.0
	for i := 0; i < digits; i++ {
		p *= 10
	}
	if v < 0 {
		return -float64(int64(-v*p+0.5)) / p
	}
	return float64(int64(v*p+0.5)) / p
}
