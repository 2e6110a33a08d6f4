package glacier

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/wire"
)

// fetch gathers the fragments of one bundle until it can rebuild it.
type fetch struct {
	owner   id.ID
	seq     uint64
	bk      id.ID
	keys    []id.ID
	req     uint64
	rounds  int
	found   bool
	n, m    int                             // the code: this node's until a manifest tells
	byMan   map[Hash]map[int]*Fragment      // fragments by manifest (an owner's fork has two)
	done    func(*Bundle, *Manifest, error) // nil once finished
	fetched map[int]bool
	// final: indices whose walk ended at a node that answered.
	final map[uint16]bool
}

// answered notes that the walk for index i ended. Once so many walks have
// ended that fewer than M fragments could be out there, and none was
// found, the bundle is not there: no need to wait for the timeouts.
func (x *fetch) answered(g *Glacier, i uint16) {
	if int(i) >= x.n {
		return
	}
	x.final[i] = true
	if !x.found && len(x.final) >= x.n-x.m+1 {
		g.finishFetch(x, nil, nil, fmt.Errorf("%w: %s bundle %d", ErrNoBundle, x.owner.Short(), x.seq))
	}
}

// Fetch rebuilds bundle seq of user owner from its fragments: it asks the
// root of every fragment's key (which walks the request clockwise to where
// a fragment was handed on), verifies every record (certificate, manifest
// signature, Merkle proof, bundle hash) and decodes as soon as it has
// enough fragments of one manifest. It fails with ErrNoBundle when nobody
// answers at all, ErrUnrecoverable when too few fragments survive.
func (g *Glacier) Fetch(owner id.ID, seq uint64, done func(*Bundle, *Manifest, error)) {
	bk := BundleKey(owner, seq)
	x := &fetch{owner: owner, seq: seq, bk: bk, req: g.req(), byMan: map[Hash]map[int]*Fragment{}, done: done, fetched: map[int]bool{}, final: map[uint16]bool{}}
	// The code is unknown until a fragment arrives: ask at the offsets of
	// this node's own code, which is the community's.
	x.n, x.m = g.cfg.Code.N, g.cfg.Code.M
	x.keys = FragmentKeys(bk, x.n)
	g.fetches[x.req] = x
	g.stats.Fetches++
	g.fetchRound(x)
}

// askAll asks the root of every fragment key not yet answered.
func (g *Glacier) askAll(x *fetch) {
	for i, k := range x.keys {
		if x.fetched[i] {
			continue
		}
		g.route(k, wire.TypeGlacierFetch, wire.GlacierFetch{Req: x.req, Origin: g.self, Bundle: x.bk, Index: uint16(i), Skips: uint8(g.cfg.FetchSkips)})
	}
}

func (g *Glacier) fetchRound(x *fetch) {
	x.rounds++
	g.askAll(x)
	req := x.req
	g.env.Clock.AfterFunc(g.cfg.FetchTimeout, func() {
		x := g.fetches[req]
		if x == nil {
			return
		}
		if x.rounds < g.cfg.FetchAttempts {
			g.fetchRound(x)
			return
		}
		var err error
		if !x.found {
			err = fmt.Errorf("%w: %s bundle %d", ErrNoBundle, x.owner.Short(), x.seq)
		} else {
			best := 0
			for _, m := range x.byMan {
				best = max(best, len(m))
			}
			err = fmt.Errorf("%w: %s bundle %d: %d fragments found", ErrUnrecoverable, x.owner.Short(), x.seq, best)
		}
		g.finishFetch(x, nil, nil, err)
	})
}

func (g *Glacier) finishFetch(x *fetch, b *Bundle, m *Manifest, err error) {
	delete(g.fetches, x.req)
	if err != nil {
		g.stats.FetchesFailed++
	} else {
		g.stats.FetchesOK++
	}
	if d := x.done; d != nil {
		x.done = nil
		d(b, m, err)
	}
}

func (x *fetch) add(g *Glacier, recs []wire.GlacierRecord) {
	for _, r := range recs {
		f, bk, err := g.checkRecord(r)
		if err != nil || bk != x.bk || f.Manifest.Owner != x.owner || f.Manifest.Seq != x.seq {
			g.stats.BadFragments++
			continue
		}
		x.found = true
		if c := f.Manifest.Code; c.N != x.n {
			// The bundle was coded for a community of another size than
			// this node assumes: ask again at its own offsets.
			x.n, x.m = c.N, c.M
			x.keys = FragmentKeys(x.bk, c.N)
			x.fetched = map[int]bool{}
			x.final = map[uint16]bool{}
			g.askAll(x)
		}
		x.m = f.Manifest.Code.M
		mh := f.Manifest.Hash()
		set := x.byMan[mh]
		if set == nil {
			set = map[int]*Fragment{}
			x.byMan[mh] = set
		}
		set[f.Index] = f
		x.fetched[f.Index] = true
		if len(set) < f.Manifest.Code.M {
			continue
		}
		frags := make([]*Fragment, 0, len(set))
		for i := 0; i < f.Manifest.Code.N; i++ {
			if fr, ok := set[i]; ok {
				frags = append(frags, fr)
			}
		}
		b, err := Rebuild(frags)
		if err != nil || b.Owner != x.owner || b.Seq != x.seq {
			// The signed manifest names a bundle hash the fragments do not
			// decode to: the owner signed garbage. Nothing better exists.
			g.stats.BadFragments++
			delete(x.byMan, mh)
			continue
		}
		m := f.Manifest
		g.finishFetch(x, b, &m, nil)
		return
	}
}

// Recover walks a user's chain of bundles from seq on and hands each
// bundle it rebuilds to each. It verifies that each manifest names its
// predecessor whenever both are found (prev is the hash of bundle
// seq-1's manifest; the zero hash at seq 0, or to accept whatever comes
// first). A missing position does not end the walk: compaction frees
// superseded bundles, and a bundle may be lost, so the walk looks up to
// RecoverLookAhead positions further, and takes the chain as ended only
// after that many missing in a row. done reports the position after the
// last bundle found and its manifest's hash; its error is ErrLost naming
// every position that is neither found nor superseded by a bundle found
// (missing, or with too few fragments), after everything else is handed
// over, or ErrBroken, at once, when a manifest names another predecessor.
func (g *Glacier) Recover(owner id.ID, seq uint64, prev Hash, each func(*Bundle, *Manifest), done func(next uint64, last Hash, err error)) {
	g.RecoverFloor(owner, seq, prev, nil, each, done)
}

// RecoverFloor is Recover with a floor: floor, if not nil, is asked when
// the look-ahead would end the walk, and returns a position the chain is
// known to reach (the one the user's root record names; ok false if none
// is known yet). The walk does not end before it has passed that
// position (a run of missing positions as long as the look-ahead below it
// does not stop it), and every position up to it that is not found is
// lost: a chain that simply ends early (its last bundles destroyed) is
// reported, not taken for complete. The floor may lag behind the true
// end (the root record is archived after it changes), so past it the
// look-ahead still decides where the chain ends.
func (g *Glacier) RecoverFloor(owner id.ID, seq uint64, prev Hash, floor func() (uint64, bool), each func(*Bundle, *Manifest), done func(next uint64, last Hash, err error)) {
	ahead := max(g.cfg.RecoverLookAhead, 1)
	var gap []uint64        // missing positions since the last one found
	var holes []uint64      // missing positions followed by a later bundle
	var broken []uint64     // positions with fragments, but too few
	var covers []*Manifest  // compacted manifests found
	next, last := seq, prev // after the last bundle found
	check := seq > 0 && prev != (Hash{})
	finish := func() {
		var lost []uint64
		if floor != nil {
			// The chain reaches f at least: what the walk did not find up
			// to it is lost, not past the end.
			if f, ok := floor(); ok {
				for _, s := range gap {
					if s <= f {
						holes = append(holes, s)
					}
				}
			}
		}
		for _, s := range append(holes, broken...) {
			superseded := false
			for _, m := range covers {
				superseded = superseded || (m.Seq > s && m.Covers(s))
			}
			if !superseded {
				lost = append(lost, s)
			}
		}
		if len(lost) > 0 {
			slices.Sort(lost)
			done(next, last, fmt.Errorf("%w: %s bundles %s (chain read to %d)", ErrLost, owner.Short(), spans(lost), next))
			return
		}
		done(next, last, nil)
	}
	var step func(s uint64)
	step = func(s uint64) {
		g.Fetch(owner, s, func(b *Bundle, m *Manifest, err error) {
			switch {
			case errors.Is(err, ErrNoBundle):
				gap = append(gap, s)
				check = false
				if len(gap) >= ahead {
					if f, ok := callFloor(floor); !ok || s > f {
						finish()
						return
					}
				}
				step(s + 1)
				return
			case err != nil:
				broken = append(broken, s)
				check = false
			case check && m.Prev != last:
				done(next, last, fmt.Errorf("%w: bundle %d names %x as its predecessor, not %x", ErrBroken, s, m.Prev[:4], last[:4]))
				return
			default:
				each(b, m)
				if len(m.Supersedes) > 0 {
					covers = append(covers, m)
				}
				next, last, check = s+1, m.Hash(), true
			}
			holes = append(holes, gap...)
			gap = nil
			step(s + 1)
		})
	}
	step(seq)
}

func callFloor(floor func() (uint64, bool)) (uint64, bool) {
	if floor == nil {
		return 0, false
	}
	return floor()
}

// spans writes sorted positions with runs shortened: [2 5-9].
func spans(ps []uint64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] <= ps[j]+1 {
			j++
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", ps[i], ps[j])
		} else {
			fmt.Fprintf(&b, "%d", ps[i])
		}
		i = j + 1
	}
	b.WriteByte(']')
	return b.String()
}
