package scenario

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/glacier"
	"github.com/epost-mail/epost/internal/store"
)

// TestGlacierRecoveryFloorNamesALostTail: the user's root record names a
// position the chain reaches at least. When every fragment of the last
// bundles is gone, a walk without that floor simply ends and reports
// success; with it, the positions up to the floor are reported lost. And
// a run of missing positions as long as the look-ahead, which would end a
// walk, does not end one that has not reached the floor: the bundles
// after it are restored.
func TestGlacierRecoveryFloorNamesALostTail(t *testing.T) {
	gcfg := glacier.ConfigFor(20)
	gcfg.RecoverLookAhead = 3
	gcfg.CompactAfter = 0
	s, gls, hosts, err := NewGlacierCommunity(29, 20, gcfg)
	if err != nil {
		t.Fatal(err)
	}
	g := gls[hosts[3]]
	address := "tail@sim.epost"
	cert := glacierOwner(t, s, g, address)
	user := cert.UserID.ID
	// Ten bundles of two objects each.
	for b := range 10 {
		archiveObjects(t, g, user, 2, fmt.Sprintf("bundle %d object %%d", b))
	}
	if err := s.S.RunFor(5 * env.Minute); err != nil {
		t.Fatal(err)
	}
	if got := g.Stats().Archived; got != 10 {
		t.Fatalf("%d bundles placed, want 10", got)
	}
	// Destroy every fragment of bundles 2 to 4 (a run as long as the
	// look-ahead) and of the last two, 8 and 9, on every disk.
	for _, seq := range []uint64{2, 3, 4, 8, 9} {
		bk := glacier.BundleKey(user, seq)
		destroyed := 0
		for _, h := range hosts {
			ks, _, _ := s.Disk(h).Keys(store.KindFragment, store.Range{}, nil, 1<<20)
			for _, k := range ks {
				if [16]byte(k[:16]) == [16]byte(bk) {
					s.Disk(h).Corrupt(store.KindFragment, k)
					destroyed++
				}
			}
		}
		if destroyed < gcfg.Code.N {
			t.Fatalf("found %d fragments of bundle %d, want %d", destroyed, seq, gcfg.Code.N)
		}
	}
	recoverWith := func(floor func() (uint64, bool)) (seqs []uint64, next uint64, rerr error) {
		t.Helper()
		done := false
		gls[hosts[11]].RecoverFloor(user, 0, glacier.Hash{}, floor, func(b *glacier.Bundle, _ *glacier.Manifest) {
			seqs = append(seqs, b.Seq)
		}, func(n uint64, _ glacier.Hash, err error) {
			next, rerr, done = n, err, true
		})
		if _, err := s.S.RunWhile(func() bool { return !done }, s.S.Now().Add(4*env.Hour)); err != nil {
			t.Fatal(err)
		}
		if !done {
			t.Fatal("recovery did not finish")
		}
		return seqs, next, rerr
	}

	// Without a floor the run of three missing positions ends the walk,
	// which takes the chain for complete.
	seqs, next, rerr := recoverWith(nil)
	if fmt.Sprint(seqs) != "[0 1]" || next != 2 || rerr != nil {
		t.Errorf("without a floor: bundles %v, next %d, err %v; want [0 1], 2, nil", seqs, next, rerr)
	}

	// The root record names bundle 8 (it lags one behind the chain's
	// true end, 9): the walk crosses the run, restores 5 to 7, and names
	// every position up to the floor that it did not find; 9, past the
	// floor, it cannot know of.
	asked := 0
	seqs, next, rerr = recoverWith(func() (uint64, bool) { asked++; return 8, true })
	if fmt.Sprint(seqs) != "[0 1 5 6 7]" || next != 8 {
		t.Errorf("with floor 8: bundles %v, next %d; want [0 1 5 6 7], next 8", seqs, next)
	}
	if !errors.Is(rerr, glacier.ErrLost) || !strings.Contains(rerr.Error(), "[2-4 8]") {
		t.Errorf("with floor 8: error %v, want ErrLost naming bundles [2-4 8]", rerr)
	}
	if asked == 0 {
		t.Error("the floor was never asked")
	}
}
