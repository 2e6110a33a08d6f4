package scenario

import (
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/glacier"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/overlay"
	store "github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

func resultInt(t *testing.T, r *Result, name string) int {
	t.Helper()
	switch v := r.vals[name].(type) {
	case int:
		return v
	case uint64:
		return int(v)
	}
	t.Fatalf("result has no integer %q: %v", name, r.vals[name])
	return 0
}

func resultFloat(t *testing.T, r *Result, name string) float64 {
	t.Helper()
	v, ok := r.vals[name].(float64)
	if !ok {
		t.Fatalf("result has no number %q: %v", name, r.vals[name])
	}
	return v
}

// TestGlacierSurvivesSixtyPercentOfASmallCommunity: with 50 nodes every
// node holds its balanced share of every bundle, so when 30 of them fail
// at once the 20 left hold enough fragments, and every object is rebuilt
// through the real recovery path.
func TestGlacierSurvivesSixtyPercentOfASmallCommunity(t *testing.T) {
	r, err := RunGlacier(GlacierConfig{Nodes: 50, Objects: 60, Owners: 3, MinKB: 1, MaxKB: 20, Fail: 0.6, AuditMinutes: 10, Seed: 1, Seeds: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := resultFloat(t, r, "recovered_fraction"); got != 1 {
		t.Errorf("recovered_fraction = %v, want 1 (%v)", got, r.vals)
	}
	if got := resultInt(t, r, "bundles_lost_to_worst_failure"); got != 0 {
		t.Errorf("%d bundles would not survive the worst 60%% failing", got)
	}
	if surv, m := resultInt(t, r, "min_surviving_fragments"), resultInt(t, r, "fragments_m"); surv < m {
		t.Errorf("a bundle kept %d fragments, fewer than the %d it needs", surv, m)
	}
	if got := resultInt(t, r, "bad_fragments"); got != 0 {
		t.Errorf("%d fragments failed verification between honest nodes", got)
	}
	if got := resultInt(t, r, "bundles_unrecovered"); got != 0 {
		t.Errorf("%d chains failed to recover", got)
	}
}

// TestGlacierRepairsLostFragments: after 30% of the nodes fail, the
// coordinators' audits count too few fragments, rebuild the missing ones
// and place them, so a second failure of 30% of the survivors still
// loses nothing.
func TestGlacierRepairsLostFragments(t *testing.T) {
	r, err := RunGlacier(GlacierConfig{Nodes: 60, Objects: 60, Owners: 2, MinKB: 1, MaxKB: 20, Fail: 0.3, RepairRounds: 2, AuditMinutes: 10, Seed: 2, Seeds: 1})
	if err != nil {
		t.Fatal(err)
	}
	if resultInt(t, r, "repairs") == 0 || resultInt(t, r, "fragments_regenerated") == 0 {
		t.Errorf("no repair after losing 30%% of the nodes: %v", r.vals)
	}
	if got := resultFloat(t, r, "recovered_fraction"); got != 1 {
		t.Errorf("recovered_fraction = %v, want 1", got)
	}
}

// TestGlacierRefusesForgedFragments: a holder stores nothing that does not
// verify: a manifest signed by someone other than the certificate's user,
// a certificate from another community, a shard that does not match the
// signed Merkle root. A genuine fragment is stored and acknowledged.
func TestGlacierRefusesForgedFragments(t *testing.T) {
	gcfg := glacier.ConfigFor(20)
	s, gls, hosts, err := NewGlacierCommunity(7, 20, gcfg)
	if err != nil {
		t.Fatal(err)
	}
	rr := randReader{s.S.Rand()}
	const address = "owner@sim.epost"
	keys, err := identity.GenerateUserKeys(rr, address)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := s.CA.IssueUser(rr, address, keys.Signing.Public(), keys.Sealing.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := identity.NewCA(rr)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherCA.IssueUser(rr, address, keys.Signing.Public(), keys.Sealing.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	mallory, err := identity.GenerateUserKeys(rr, address)
	if err != nil {
		t.Fatal(err)
	}
	bundle := &glacier.Bundle{Owner: cert.UserID.ID, Objects: []glacier.Object{{Kind: 1, Data: []byte("a message body")}}}
	_, good, err := glacier.MakeFragments(gcfg.Code, bundle, glacier.Hash{}, keys.Signing)
	if err != nil {
		t.Fatal(err)
	}
	_, forged, err := glacier.MakeFragments(gcfg.Code, bundle, glacier.Hash{}, mallory.Signing)
	if err != nil {
		t.Fatal(err)
	}
	tampered := *good[1]
	tampered.Data = append([]byte(nil), tampered.Data...)
	tampered.Data[0] ^= 1

	holder, origin := hosts[3], hosts[4]
	g := gls[holder]
	send := func(f *glacier.Fragment, certBytes []byte) {
		enc, err := f.Encode()
		if err != nil {
			t.Fatal(err)
		}
		msg, err := wire.Encode(wire.TypeGlacierStore, wire.GlacierStore{
			Req: 1, Origin: s.Node(origin).Self(), Cap: 1, Lease: int64(env.Hour),
			Record: wire.GlacierRecord{Fragment: enc, Address: address, Cert: certBytes},
		})
		if err != nil {
			t.Fatal(err)
		}
		g.Direct(s.Node(origin).Self(), msg)
	}
	send(forged[0], cert.Bytes())
	send(good[0], foreign.Bytes())
	send(&tampered, cert.Bytes())
	if err := s.S.RunFor(10 * env.Second); err != nil {
		t.Fatal(err)
	}
	if st := g.Stats(); st.BadFragments != 3 || st.Stored != 0 {
		t.Fatalf("after three forgeries: bad %d, stored %d; want 3 and 0", st.BadFragments, st.Stored)
	}
	if n, _ := g.Held(); n != 0 {
		t.Fatalf("holder keeps %d forged fragments", n)
	}
	send(good[0], cert.Bytes())
	if err := s.S.RunFor(10 * env.Second); err != nil {
		t.Fatal(err)
	}
	if st := g.Stats(); st.Stored != 1 {
		t.Fatalf("genuine fragment: stored %d, want 1", st.Stored)
	}
}

// TestGlacierLeasesLiveAsLongAsTheOwnerRenews: fragments carry leases on
// their holders' uptime counters. An owner that renews keeps its archive
// past the lease; without renewals the fragments expire and are swept.
func TestGlacierLeasesLiveAsLongAsTheOwnerRenews(t *testing.T) {
	for _, renew := range []bool{true, false} {
		gcfg := glacier.ConfigFor(20)
		gcfg.Lease = 20 * env.Minute
		gcfg.RenewPeriod = 6 * env.Minute
		if !renew {
			gcfg.RenewPeriod = 1000 * env.Hour
		}
		s, gls, hosts, err := NewGlacierCommunity(11, 20, gcfg)
		if err != nil {
			t.Fatal(err)
		}
		cert := archiveFor(t, s, gls[hosts[5]], "keeper@sim.epost", 20, "object %d of the keeper")
		if err := s.S.RunFor(env.Hour); err != nil {
			t.Fatal(err)
		}
		fragments := 0
		for _, h := range hosts {
			ks, _, _ := s.Disk(h).Keys(store.KindFragment, store.Range{}, nil, 1<<20)
			for _, k := range ks {
				if k[16] != 0xFF || k[17] < 0xFD { // not the owner's queue journal
					fragments++
				}
			}
		}
		if !renew {
			if fragments != 0 {
				t.Errorf("without renewals %d fragment records outlived their 20-minute lease by 40 minutes", fragments)
			}
			continue
		}
		if fragments < gcfg.Code.N {
			t.Fatalf("with renewals only %d fragment records are left after 3 leases, want at least %d", fragments, gcfg.Code.N)
		}
		got := 0
		done := false
		gls[hosts[9]].Recover(cert.UserID.ID, 0, glacier.Hash{}, func(b *glacier.Bundle, _ *glacier.Manifest) { got += len(b.Objects) },
			func(_ uint64, _ glacier.Hash, err error) {
				if err != nil {
					t.Errorf("recover: %v", err)
				}
				done = true
			})
		if _, err := s.S.RunWhile(func() bool { return !done }, s.S.Now().Add(env.Hour)); err != nil {
			t.Fatal(err)
		}
		if got != 20 {
			t.Errorf("recovered %d of 20 objects after three lease periods", got)
		}
	}
}

// TestGlacierHandsFragmentsToNodesThatJoin: when nodes join next to
// fragments' keys, the holders hand those fragments to them, so a fetch
// that asks only each key's root (no walking) still rebuilds everything.
func TestGlacierHandsFragmentsToNodesThatJoin(t *testing.T) {
	gcfg := glacier.ConfigFor(300)
	gcfg.FetchSkips = 0
	s, gls, hosts, err := NewGlacierCommunity(12, 60, gcfg)
	if err != nil {
		t.Fatal(err)
	}
	cert := archiveFor(t, s, gls[hosts[0]], "mover@sim.epost", 10, "object %d that moves")
	if err := s.S.RunFor(2 * env.Minute); err != nil {
		t.Fatal(err)
	}
	// Five times as many nodes join: most keys get a new root.
	if _, err := s.BuildStorage(240, 200*env.Millisecond, 5*env.Minute, nil); err != nil {
		t.Fatal(err)
	}
	var handed uint64
	for _, g := range gls {
		handed += g.Stats().HandedOver
	}
	if handed == 0 {
		t.Fatal("no fragment was handed to the nodes that joined")
	}
	got, done := 0, false
	gls[hosts[7]].Recover(cert.UserID.ID, 0, glacier.Hash{}, func(b *glacier.Bundle, _ *glacier.Manifest) { got += len(b.Objects) },
		func(_ uint64, _ glacier.Hash, err error) {
			if err != nil {
				t.Errorf("recover: %v", err)
			}
			done = true
		})
	if _, err := s.S.RunWhile(func() bool { return !done }, s.S.Now().Add(env.Hour)); err != nil {
		t.Fatal(err)
	}
	if got != 10 {
		t.Errorf("recovered %d of 10 objects from the keys' roots after %d handovers", got, handed)
	}
}

// TestGlacierQueueSurvivesACrash: objects queued but not yet sealed when
// the owner's node crashes are in its journal; after the restart the
// archive hands them out again, in order, to be queued anew.
func TestGlacierQueueSurvivesACrash(t *testing.T) {
	gcfg := glacier.ConfigFor(20)
	s, gls, hosts, err := NewGlacierCommunity(13, 20, gcfg)
	if err != nil {
		t.Fatal(err)
	}
	rr := randReader{s.S.Rand()}
	const address = "crasher@sim.epost"
	keys, _ := identity.GenerateUserKeys(rr, address)
	cert, err := s.CA.IssueUser(rr, address, keys.Signing.Public(), keys.Sealing.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	home := hosts[3]
	add := func() *glacier.Glacier {
		g := gls[home]
		if err := g.AddOwner(address, keys.Signing, cert.Bytes(), 0, glacier.Hash{}, true); err != nil {
			t.Fatal(err)
		}
		return g
	}
	archive := func(g *glacier.Glacier, from, to int) [][32]byte {
		var ks [][32]byte
		for i := from; i < to; i++ {
			data := []byte(fmt.Sprintf("object %d", i))
			k := sha256.Sum256(data)
			ks = append(ks, k)
			if err := g.Archive(cert.UserID.ID, glacier.Object{Key: k, Kind: 1, Data: data}); err != nil {
				t.Fatal(err)
			}
		}
		return ks
	}
	g := add()
	archive(g, 0, 5)
	g.Flush() // a first bundle, placed in full
	if err := s.S.RunFor(time1m); err != nil {
		t.Fatal(err)
	}
	pending := archive(g, 5, 9) // queued, not sealed: the delay is 10 minutes
	if err := s.S.RunFor(env.Second); err != nil {
		t.Fatal(err)
	}
	s.Crash(home)
	s.S.Restart(home)
	if err := s.S.RunFor(time1m); err != nil {
		t.Fatal(err)
	}
	g = add()
	got := g.Unarchived(cert.UserID.ID)
	if len(got) != len(pending) {
		t.Fatalf("after the crash %d objects are to be archived again, want the %d queued", len(got), len(pending))
	}
	for i, r := range got {
		if r.Key != pending[i] {
			t.Errorf("object %d to archive again is %x, want %x", i, r.Key[:4], pending[i][:4])
		}
	}
	if again := g.Unarchived(cert.UserID.ID); len(again) != 0 {
		t.Errorf("the list was handed out twice")
	}
}

// TestGlacierChainSurvivesAKeyRotation: an owner archives under one key,
// rotates, and (on a restarted node that must find the chain's end)
// continues the chain under the new key. The whole chain, manifests
// signed by either key, is recovered: the old certificate is superseded,
// not revoked, so what it signed stays valid.
func TestGlacierChainSurvivesAKeyRotation(t *testing.T) {
	s, gls, hosts, err := NewGlacierCommunity(15, 20, glacier.ConfigFor(20))
	if err != nil {
		t.Fatal(err)
	}
	rr := randReader{s.S.Rand()}
	const address = "rotator@sim.epost"
	old, _ := identity.GenerateUserKeys(rr, address)
	keys, err := old.Rotate(rr)
	if err != nil {
		t.Fatal(err)
	}
	home := hosts[4]
	signers := map[identity.VerifyingKey]int{}
	for i, k := range []identity.UserKeys{old, keys} {
		cert, err := s.CA.IssueUser(rr, address, k.Signing.Public(), k.Sealing.Recipient())
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			s.Crash(home)
			s.S.Restart(home)
			if err := s.S.RunFor(time1m); err != nil {
				t.Fatal(err)
			}
		}
		g := gls[home]
		if err := g.AddOwner(address, k.Signing, cert.Bytes(), 0, glacier.Hash{}, i == 0); err != nil {
			t.Fatal(err)
		}
		for j := range 5 {
			data := []byte(fmt.Sprintf("object %d under key %d", j, i))
			if err := g.Archive(cert.UserID.ID, glacier.Object{Key: sha256.Sum256(data), Kind: 1, Data: data}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.S.RunFor(30 * time1m); err != nil { // past the archive delay and the probe
			t.Fatal(err)
		}
		signers[k.Signing.Public()] = 0
	}
	// The recovering node restarts first: it has checked no manifest yet,
	// and each holder must answer with the certificate of the key that
	// signed the bundle, though it holds the owner's newer one too.
	s.Crash(hosts[9])
	s.S.Restart(hosts[9])
	if err := s.S.RunFor(time1m); err != nil {
		t.Fatal(err)
	}
	got, done := 0, false
	gls[hosts[9]].Recover(id.ForUser(address).ID, 0, glacier.Hash{}, func(b *glacier.Bundle, m *glacier.Manifest) {
		got += len(b.Objects)
		for k := range signers {
			if m.Verify(k) == nil {
				signers[k]++
			}
		}
	}, func(_ uint64, _ glacier.Hash, err error) {
		if err != nil {
			t.Errorf("recover: %v", err)
		}
		done = true
	})
	if _, err := s.S.RunWhile(func() bool { return !done }, s.S.Now().Add(env.Hour)); err != nil {
		t.Fatal(err)
	}
	if got != 10 || signers[old.Signing.Public()] == 0 || signers[keys.Signing.Public()] == 0 {
		t.Errorf("recovered %d of 10 objects; bundles signed by the old and new keys: %v", got, signers)
	}
}

// FuzzGlacierMessages: whatever a peer sends, Glacier drops or handles it
// without panicking.
func FuzzGlacierMessages(f *testing.F) {
	s, gls, hosts, err := NewGlacierCommunity(14, 5, glacier.ConfigFor(5))
	if err != nil {
		f.Fatal(err)
	}
	g := gls[hosts[2]]
	peer := s.Node(hosts[1]).Self()
	for _, t := range []wire.Type{wire.TypeGlacierStore, wire.TypeGlacierStored, wire.TypeGlacierFetch, wire.TypeGlacierFragments, wire.TypeGlacierHolding, wire.TypeGlacierRenew} {
		b, _ := wire.Encode(t, []any{})
		f.Add(b)
	}
	b, _ := wire.Encode(wire.TypeGlacierFetch, wire.GlacierFetch{Req: 1, Origin: peer, Index: 3, Skips: 2})
	f.Add(b)
	b, _ = wire.Encode(wire.TypeGlacierHolding, wire.GlacierHolding{N: 10, Indices: []uint16{1, 2, 40}, Holder: peer})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		g.Direct(peer, b)
		g.Deliver(overlay.Message{Key: peer.ID.ID, Src: peer, Payload: b})
		if err := s.S.RunFor(10 * env.Millisecond); err != nil {
			t.Fatal(err)
		}
	})
}

// archiveFor makes address a user of the community, has g (the user's
// home node) archive n objects for it, named by format, and flushes them
// into a bundle.
func archiveFor(t *testing.T, s *Storage, g *glacier.Glacier, address string, n int, format string) *identity.UserCert {
	t.Helper()
	cert := glacierOwner(t, s, g, address)
	archiveObjects(t, g, cert.UserID.ID, n, format)
	return cert
}

// glacierOwner makes a user whose archive g keeps.
func glacierOwner(t *testing.T, s *Storage, g *glacier.Glacier, address string) *identity.UserCert {
	t.Helper()
	rr := randReader{s.S.Rand()}
	keys, _ := identity.GenerateUserKeys(rr, address)
	cert, err := s.CA.IssueUser(rr, address, keys.Signing.Public(), keys.Sealing.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.AddOwner(address, keys.Signing, cert.Bytes(), 0, glacier.Hash{}, true); err != nil {
		t.Fatal(err)
	}
	return cert
}

// archiveObjects archives n objects named by format and seals them into
// one bundle.
func archiveObjects(t *testing.T, g *glacier.Glacier, user id.ID, n int, format string) {
	t.Helper()
	for i := range n {
		data := []byte(fmt.Sprintf(format, i))
		if err := g.Archive(user, glacier.Object{Key: sha256.Sum256(data), Kind: 1, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	g.Flush()
}
