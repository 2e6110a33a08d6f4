package store

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestDiskWriteErrorThenRecovery makes the kernel fail the store's file
// writes (RLIMIT_FSIZE: growing the file past the limit fails with EFBIG,
// like a full disk) and checks that writes report errors, never success or
// panics, that everything acknowledged stays readable, and that the same
// Store works again once the limit is lifted. The limit is per process,
// so the scenario runs in a child process.
func TestDiskWriteErrorThenRecovery(t *testing.T) {
	if os.Getenv(helperEnv) == "diskerr" {
		diskErrScenario(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDiskWriteErrorThenRecovery$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=diskerr", helperDirEnv+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("diskerr scenario done")) {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func diskErrScenario(t *testing.T) {
	path := filepath.Join(os.Getenv(helperDirEnv), "store.db")
	s := openAt(t, path, DefaultConfig())
	var stored []uint64
	for i := uint64(0); i < 20; i++ {
		d := payload(i, 8<<10)
		mustPut(t, s, KindImmutable, ImmutableKey(d), d, 100)
		stored = append(stored, i)
	}
	size, err := s.DiskBytes()
	if err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	limited := old
	limited.Cur = uint64(size) // the file may not grow at all
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limited); err != nil {
		t.Fatal(err)
	}
	var failures int
	for i := uint64(100); i < 300; i++ {
		d := payload(i, 32<<10)
		err := s.Put(KindImmutable, ImmutableKey(d), d, 100)
		if err == nil {
			stored = append(stored, i)
			continue
		}
		failures++
		t.Logf("write refused while the disk is full: %v", err)
		if ok, _ := s.Has(KindImmutable, ImmutableKey(d)); ok {
			t.Fatalf("failed write %d is visible", i)
		}
		if failures == 3 {
			break
		}
	}
	if failures == 0 {
		t.Fatal("no write failed under the file size limit")
	}
	for _, i := range stored {
		n := 8 << 10
		if i >= 100 {
			n = 32 << 10
		}
		d := payload(i, n)
		mustGet(t, s, KindImmutable, ImmutableKey(d), d)
	}
	// Space returns.
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	for i := uint64(1000); i < 1030; i++ {
		d := payload(i, 32<<10)
		mustPut(t, s, KindImmutable, ImmutableKey(d), d, 100)
		stored = append(stored, i)
	}
	checkInvariants(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, DefaultConfig())
	for _, i := range stored {
		n := 8 << 10
		if i >= 100 {
			n = 32 << 10
		}
		d := payload(i, n)
		mustGet(t, s, KindImmutable, ImmutableKey(d), d)
	}
	checkInvariants(t, s)
	t.Log("diskerr scenario done")
}

// TestUnreadablePagesGiveErrors truncates the database file under an
// open store, so reads of the vanished pages fault (SIGBUS), as they
// would on a disk read error. Reads and writes must return errors, not
// crash the process.
func TestUnreadablePagesGiveErrors(t *testing.T) {
	s, path := openTemp(t, DefaultConfig())
	var keys []Key
	for i := range 100 {
		d := payload(uint64(i), 10<<10)
		keys = append(keys, ImmutableKey(d))
		s.PutAsync(KindImmutable, ImmutableKey(d), d, 1, nil)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 32<<10); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, k := range keys {
		if _, err := s.Get(KindImmutable, k); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("read of a lost page: %v", err)
			}
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("every read succeeded from a truncated file")
	}
	rep, err := s.Scrub(ScrubCursor{}, 1000)
	t.Logf("reads failed: %d of %d; scrub: %+v, %v", failed, len(keys), rep.Checked, err)
	d := payload(1000, 10<<10)
	err = s.Put(KindImmutable, ImmutableKey(d), d, 1)
	t.Logf("write after truncation: %v", err)
	if err == nil {
		mustGet(t, s, KindImmutable, ImmutableKey(d), d) // a success must be true
	}
}
