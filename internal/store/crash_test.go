//go:build unix

package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/epost-mail/epost/internal/env"
)

// The crash test runs this test binary again as a child process (selected
// by helperEnv) that writes through group commit and prints each write's
// number only after its completion fired.
const (
	helperEnv    = "EPOST_STORE_HELPER"
	helperDirEnv = "EPOST_STORE_HELPER_DIR"
)

// crashSlots is how many mutable keys the crash writer cycles through.
const crashSlots = 64

// crashWrite describes write number i of the crash writer: even numbers
// store a new immutable object, odd numbers overwrite a mutable slot with
// a newer version (payload i).
func crashWrite(i uint64) (Entry, []byte) {
	d := payload(i, 200+int(i*7919%12000))
	if i%2 == 0 {
		return Entry{Kind: KindImmutable, Key: ImmutableKey(d)}, d
	}
	return Entry{Kind: KindMutable, Key: ringKey(i%crashSlots, 0, 0xc0ffee)}, d
}

// TestHelperProcess is the child side of the crash test. It does nothing
// unless started by TestCrashKeepsAcknowledgedWrites.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "crash" {
		t.Skip("helper process for TestCrashKeepsAcknowledgedWrites")
	}
	s, err := Open(filepath.Join(os.Getenv(helperDirEnv), "store.db"), DefaultConfig())
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(3)
	}
	var out sync.Mutex
	const writers, inFlight = 8, 8
	var next sync.Mutex
	n := uint64(0)
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem := make(chan struct{}, inFlight)
			for {
				sem <- struct{}{}
				// Numbers are handed out under the lock that also
				// submits, so writes to one mutable slot are submitted,
				// and therefore applied, in increasing version order.
				next.Lock()
				i := n
				n++
				e, d := crashWrite(i)
				s.PutAsync(e.Kind, e.Key, d, env.Time(i), func(err error) {
					if err != nil {
						fmt.Fprintln(os.Stderr, "put:", err)
						os.Exit(4)
					}
					out.Lock()
					fmt.Fprintf(os.Stdout, "ack %d\n", i) // unbuffered: one write(2) per ack
					out.Unlock()
					<-sem
				})
				next.Unlock()
			}
		}()
	}
	wg.Wait() // never returns; the parent kills us
}

// TestCrashKeepsAcknowledgedWrites kills a writing child with SIGKILL and
// checks that every write it acknowledged is present and intact, that no
// mutable object went back to an older version than acknowledged, and
// that the file is consistent.
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=crash", helperDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	const killAfter = 600
	acked := map[uint64]bool{}
	sc := bufio.NewScanner(stdout)
	killed := false
	for sc.Scan() {
		line := sc.Text()
		num, ok := strings.CutPrefix(line, "ack ")
		if !ok {
			continue // test framework chatter
		}
		i, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			t.Fatalf("bad ack line %q", line)
		}
		acked[i] = true
		if len(acked) == killAfter && !killed {
			// Mid-write: the child always has writes in flight.
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	// Acks read after the kill were printed before it: they count too.
	werr := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(werr, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v\nstderr:\n%s", werr, stderr.String())
	}
	if len(acked) < killAfter {
		t.Fatalf("only %d acks before the child stopped", len(acked))
	}

	s := openAt(t, filepath.Join(dir, "store.db"), DefaultConfig())
	checkInvariants(t, s) // includes bbolt's own consistency check
	lastAcked := map[Key]uint64{}
	for i := range acked {
		e, d := crashWrite(i)
		if e.Kind == KindImmutable {
			mustGet(t, s, e.Kind, e.Key, d)
			continue
		}
		if v, ok := lastAcked[e.Key]; !ok || i > v {
			lastAcked[e.Key] = i
		}
	}
	for k, v := range lastAcked {
		got, err := s.Get(KindMutable, k)
		if err != nil {
			t.Fatalf("mutable slot acknowledged at version %d: %v", v, err)
		}
		have := binary.BigEndian.Uint64(got)
		if have < v {
			t.Fatalf("mutable slot rolled back to version %d, version %d was acknowledged", have, v)
		}
		if _, d := crashWrite(have); !bytes.Equal(got, d) {
			t.Fatalf("mutable slot holds damaged version %d", have)
		}
	}
	rep, err := s.Scrub(ScrubCursor{}, 1<<20)
	if err != nil || len(rep.Dropped) != 0 || !rep.PassDone {
		t.Fatalf("scrub after crash: %+v %v", rep, err)
	}
	t.Logf("%d writes acknowledged before SIGKILL; %d objects on disk after restart", len(acked), s.Stats().Objects)
}
