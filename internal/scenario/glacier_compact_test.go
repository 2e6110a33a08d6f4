package scenario

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/glacier"
	"github.com/epost-mail/epost/internal/identity"
	store "github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// TestGlacierCompactsPartialBundles: light users whose mail trickles in
// seal a small bundle every archive delay; their owners merge those into
// larger ones and free the old, which lowers the storage the archive
// takes, and recovery, walking past the freed positions, still rebuilds
// every object after 60% of the nodes fail.
func TestGlacierCompactsPartialBundles(t *testing.T) {
	run := func(compactHours float64) *Result {
		r, err := RunGlacier(GlacierConfig{Nodes: 16, Objects: 12, Owners: 2, MinKB: 1, MaxKB: 4, SpreadMinutes: 60,
			Fail: 0.6, AuditMinutes: 30, CompactHours: compactHours, Seed: 3, Seeds: 1})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	plain, compacted := run(0), run(0.5)
	if got := resultInt(t, compacted, "compactions"); got == 0 {
		t.Fatalf("no compaction: %v", compacted.vals)
	}
	if got, sealed := resultInt(t, compacted, "bundles_released"), resultInt(t, compacted, "bundles_sealed"); got == 0 || got >= sealed {
		t.Errorf("%d of %d bundles freed", got, sealed)
	}
	if a, b := resultInt(t, compacted, "bundles"), resultInt(t, plain, "bundles"); a >= b {
		t.Errorf("%d bundles stored after compaction, %d without", a, b)
	}
	if a, b := resultFloat(t, compacted, "storage_overhead"), resultFloat(t, plain, "storage_overhead"); a >= b {
		t.Errorf("storage overhead %v after compaction, %v without", a, b)
	}
	for _, r := range []*Result{plain, compacted} {
		if got := resultFloat(t, r, "recovered_fraction"); got != 1 {
			t.Errorf("recovered_fraction = %v, want 1 (%v)", got, r.vals)
		}
		if got := resultInt(t, r, "bundles_unrecovered"); got != 0 {
			t.Errorf("%d chains reported an error", got)
		}
	}
}

// TestGlacierRecoveryNamesALostBundle: when every fragment of a bundle in
// the middle of a chain is gone, recovery does not stop there as if the
// chain had ended: it restores the bundles after it and ends with
// ErrLost naming the lost position.
func TestGlacierRecoveryNamesALostBundle(t *testing.T) {
	gcfg := glacier.ConfigFor(20)
	s, gls, hosts, err := NewGlacierCommunity(13, 20, gcfg)
	if err != nil {
		t.Fatal(err)
	}
	g := gls[hosts[3]]
	address := "gap@sim.epost"
	cert := glacierOwner(t, s, g, address)
	user := cert.UserID.ID
	// Five bundles of four objects each.
	for b := range 5 {
		archiveObjects(t, g, user, 4, fmt.Sprintf("bundle %d object %%d", b))
	}
	if err := s.S.RunFor(5 * env.Minute); err != nil {
		t.Fatal(err)
	}
	// Destroy every fragment of bundle 2, on every disk.
	lost := glacier.BundleKey(user, 2)
	destroyed := 0
	for _, h := range hosts {
		ks, _, _ := s.Disk(h).Keys(store.KindFragment, store.Range{}, nil, 1<<20)
		for _, k := range ks {
			if [16]byte(k[:16]) == [16]byte(lost) {
				s.Disk(h).Corrupt(store.KindFragment, k)
				destroyed++
			}
		}
	}
	if destroyed < gcfg.Code.N {
		t.Fatalf("found %d fragments of bundle 2, want %d", destroyed, gcfg.Code.N)
	}
	var seqs []uint64
	objects := 0
	var next uint64
	var rerr error
	done := false
	gls[hosts[11]].Recover(user, 0, glacier.Hash{}, func(b *glacier.Bundle, _ *glacier.Manifest) {
		seqs = append(seqs, b.Seq)
		objects += len(b.Objects)
	}, func(n uint64, _ glacier.Hash, err error) {
		next, rerr, done = n, err, true
	})
	if _, err := s.S.RunWhile(func() bool { return !done }, s.S.Now().Add(4*env.Hour)); err != nil {
		t.Fatal(err)
	}
	if !done {
		t.Fatal("recovery did not finish")
	}
	if fmt.Sprint(seqs) != "[0 1 3 4]" || objects != 16 || next != 5 {
		t.Errorf("recovered bundles %v (%d objects), next %d; want [0 1 3 4], 16 objects, next 5", seqs, objects, next)
	}
	if !errors.Is(rerr, glacier.ErrLost) || !strings.Contains(rerr.Error(), "[2]") {
		t.Errorf("recovery error %v, want ErrLost naming bundle [2]", rerr)
	}
}

// TestGlacierAuditTrafficIsBoundedByCoordinators: a holder's audit
// entries are batched and walked from coordinator to coordinator, so
// three times as many bundles cost less than twice the messages: at most
// one per coordinator (here every node, 20), however many bundles.
func TestGlacierAuditTrafficIsBoundedByCoordinators(t *testing.T) {
	perPeriod := func(bundles int) float64 {
		gcfg := glacier.ConfigFor(20)
		gcfg.AuditPeriod = 30 * env.Minute
		gcfg.CompactAfter = 0
		s, gls, hosts, err := NewGlacierCommunity(17, 20, gcfg)
		if err != nil {
			t.Fatal(err)
		}
		g := gls[hosts[2]]
		cert := glacierOwner(t, s, g, "many@sim.epost")
		for b := range bundles {
			data := []byte(fmt.Sprintf("bundle %d", b))
			if err := g.Archive(cert.UserID.ID, glacier.Object{Key: sha256.Sum256(data), Kind: 1, Data: data}); err != nil {
				t.Fatal(err)
			}
			g.Flush()
		}
		if err := s.S.RunFor(gcfg.AuditPeriod + 5*env.Minute); err != nil {
			t.Fatal(err)
		}
		msgs := func() (n uint64) {
			for _, g := range gls {
				n += g.Stats().MaintenanceMsgs
			}
			return n
		}
		before := msgs()
		if err := s.S.RunFor(4 * gcfg.AuditPeriod); err != nil {
			t.Fatal(err)
		}
		return float64(msgs()-before) / 4 / float64(len(hosts))
	}
	few, many := perPeriod(20), perPeriod(60)
	t.Logf("audit messages per node per period: %.1f with 20 bundles, %.1f with 60", few, many)
	if many > 20 || many >= 2*few {
		t.Errorf("audit messages per node per period: %.1f with 20 bundles, %.1f with 60; want at most 20 (one per coordinator) and less than twice as many", few, many)
	}
}

// TestGlacierReleaseNeedsTheOwnersSignature: a holder frees a bundle's
// fragments only on a manifest, signed by the bundle's owner, of a later
// bundle that supersedes it; one signed by anyone else changes nothing.
func TestGlacierReleaseNeedsTheOwnersSignature(t *testing.T) {
	gcfg := glacier.ConfigFor(20)
	s, gls, hosts, err := NewGlacierCommunity(19, 20, gcfg)
	if err != nil {
		t.Fatal(err)
	}
	rr := randReader{s.S.Rand()}
	const address = "keeper@sim.epost"
	keys, _ := identity.GenerateUserKeys(rr, address)
	cert, err := s.CA.IssueUser(rr, address, keys.Signing.Public(), keys.Sealing.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	mallory, _ := identity.GenerateUserKeys(rr, address)
	owner := gls[hosts[1]]
	if err := owner.AddOwner(address, keys.Signing, cert.Bytes(), 0, glacier.Hash{}, true); err != nil {
		t.Fatal(err)
	}
	data := []byte("kept until the owner says otherwise")
	if err := owner.Archive(cert.UserID.ID, glacier.Object{Key: sha256.Sum256(data), Kind: 1, Data: data}); err != nil {
		t.Fatal(err)
	}
	owner.Flush()
	if err := s.S.RunFor(5 * env.Minute); err != nil {
		t.Fatal(err)
	}
	holder := gls[hosts[7]]
	before, _ := holder.Held()
	if before == 0 {
		t.Fatal("the holder holds no fragment of bundle 0")
	}
	release := func(k identity.SigningKey) {
		m := glacier.Manifest{Owner: cert.UserID.ID, Seq: 1, Code: gcfg.Code, Size: 10, Supersedes: []glacier.SeqRange{{From: 0, To: 1}}}
		m.Sign(k)
		msg, err := wire.Encode(wire.TypeGlacierRelease, wire.GlacierRelease{Owner: cert.UserID.ID, Seq: 0, Manifest: wire.MustMarshal(&m), Address: address, Cert: cert.Bytes()})
		if err != nil {
			t.Fatal(err)
		}
		holder.Direct(s.Node(hosts[2]).Self(), msg)
		if err := s.S.RunFor(10 * env.Second); err != nil {
			t.Fatal(err)
		}
	}
	release(mallory.Signing)
	if n, _ := holder.Held(); n != before || holder.Stats().ReleasedFragments != 0 {
		t.Fatalf("a release signed by another key freed fragments: held %d of %d", n, before)
	}
	release(keys.Signing)
	if n, _ := holder.Held(); n != 0 || holder.Stats().ReleasedFragments != uint64(before) {
		t.Fatalf("the owner's release left %d of %d fragments held (%d freed)", n, before, holder.Stats().ReleasedFragments)
	}
	// The bytes are gone from the disk; the empty entries wait for their
	// leases to end.
	bk := glacier.BundleKey(cert.UserID.ID, 0)
	ks, _, _ := s.Disk(hosts[7]).Keys(store.KindFragment, store.Range{}, nil, 1<<20)
	for _, k := range ks {
		if b, _ := s.Disk(hosts[7]).Get(store.KindFragment, k); [16]byte(k[:16]) == [16]byte(bk) && len(b) > 16 {
			t.Errorf("a released fragment still holds %d bytes", len(b))
		}
	}
}
