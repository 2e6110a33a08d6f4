package post

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/store/object"
)

// Tests of the folder merge after a partition (merge.go; DESIGN.md
// section 6, "merge after partition").

// msg is a message with id n at uid.
func msg(n byte, uid uint32, flags ...string) *Message {
	slices.Sort(flags)
	return &Message{UID: uid, ID: [16]byte{n}, Date: int64(n), Flags: flags,
		Body: BodyRef{Chunks: []object.Key{{n}}, Size: int64(n)}}
}

func state(next uint32, ms ...*Message) folderState {
	s := folderState{msgs: map[uint32]*Message{}, nextUID: next}
	for _, m := range ms {
		s.msgs[m.UID] = m
	}
	return s
}

// describe lists a state as "uid:id[flags]" in UID order, then UIDNEXT.
func describe(s folderState) string {
	out := ""
	for _, uid := range sortedUIDs(s.msgs) {
		m := s.msgs[uid]
		out += fmt.Sprintf("%d:%d%v ", uid, m.ID[0], m.Flags)
	}
	return out + fmt.Sprintf("next=%d", s.nextUID)
}

// merge merges both ways round, checks that both give the same folder
// and that the ops written on top of either side lead to it, and returns
// it described.
func merge(t *testing.T, base, ours, theirs folderState) string {
	t.Helper()
	a, b := mergeStates(base, ours, theirs), mergeStates(base, theirs, ours)
	if !sameState(a, b) {
		t.Fatalf("the merge depends on the side that merges:\n ours first:   %s\n theirs first: %s", describe(a), describe(b))
	}
	for _, cur := range []folderState{ours, theirs} {
		s := folderState{msgs: map[uint32]*Message{}, nextUID: cur.nextUID}
		for uid, m := range cur.msgs {
			s.msgs[uid] = m
		}
		for _, op := range mergeOps(cur, a, object.Key{9}) {
			s.apply(op)
		}
		if !sameState(s, a) {
			t.Fatalf("the merge entry on %s leads to\n %s, not\n %s", describe(cur), describe(s), describe(a))
		}
	}
	return describe(a)
}

// sameState compares two states: messages (flags included) and UIDNEXT.
func sameState(a, b folderState) bool {
	if describe(a) != describe(b) {
		return false
	}
	for uid, m := range a.msgs {
		if !bytes.Equal(messageBytes(m), messageBytes(b.msgs[uid])) {
			return false
		}
	}
	return true
}

func TestMergeIsTheUnionOfBothSidesAppends(t *testing.T) {
	base := state(2, msg(1, 1))
	ours := state(3, msg(1, 1), msg(2, 2))
	// Theirs appended at UID 2 and 3 and expunged UID 2 again: only 3
	// is theirs to bring, and UID 2 is a conflict no longer.
	theirs := state(4, msg(1, 1), msg(3, 3))
	if got, want := merge(t, base, ours, theirs), "1:1[] 2:2[] 3:3[] next=4"; got != want {
		t.Fatalf("merged %s, want %s", got, want)
	}
}

func TestMergeCancelsAnExpungeOnlyOneSideMade(t *testing.T) {
	base := state(3, msg(1, 1), msg(2, 2))
	ours := state(3, msg(2, 2))                       // expunged 1 (or moved it elsewhere)
	theirs := state(3, msg(1, 1, `\Seen`), msg(2, 2)) // read it meanwhile
	if got, want := merge(t, base, ours, theirs), `1:1[\Seen] 2:2[] next=3`; got != want {
		t.Fatalf("merged %s, want %s", got, want)
	}
}

func TestMergeKeepsExpungesBothSidesSaw(t *testing.T) {
	// 1 was expunged before the fork (it is not in the base); 2 on both
	// sides after it.
	base := state(4, msg(2, 2), msg(3, 3))
	ours := state(4, msg(3, 3))
	theirs := state(5, msg(3, 3), msg(4, 4))
	if got, want := merge(t, base, ours, theirs), "3:3[] 4:4[] next=5"; got != want {
		t.Fatalf("merged %s, want %s", got, want)
	}
}

func TestMergeKeepsUIDsAndRenumbersOnlyConflicts(t *testing.T) {
	base := state(3, msg(1, 1), msg(2, 2))
	// Both sides appended at UID 3, different messages: the lower id
	// keeps it, the other goes above both sides' UIDNEXT. Ours also got
	// 5 at UID 4 and theirs 6 at 4 and 7 at 5.
	ours := state(5, msg(1, 1), msg(2, 2), msg(8, 3), msg(5, 4))
	theirs := state(6, msg(1, 1), msg(2, 2), msg(4, 3), msg(6, 4), msg(7, 5))
	want := "1:1[] 2:2[] 3:4[] 4:5[] 5:7[] 6:8[] 7:6[] next=8" // 8 lost UID 3, 6 lost UID 4
	if got := merge(t, base, ours, theirs); got != want {
		t.Fatalf("merged %s, want %s", got, want)
	}
}

func TestMergeKeepsAMessageBothSidesDeliveredOnce(t *testing.T) {
	// One notification, delivered on each side under different UIDs
	// (theirs had taken UID 3 for another message it expunged).
	base := state(3, msg(1, 1))
	ours := state(4, msg(1, 1), msg(5, 3, `\Seen`))
	theirs := state(5, msg(1, 1), msg(5, 4, `\Flagged`))
	if got, want := merge(t, base, ours, theirs), `1:1[] 3:5[\Flagged \Seen] next=5`; got != want {
		t.Fatalf("merged %s, want %s", got, want)
	}
	// Under the same UID, with different internal dates: the earlier.
	late := msg(5, 3)
	late.Date = 99
	a := mergeStates(base, state(4, msg(1, 1), msg(5, 3)), state(4, msg(1, 1), late))
	if a.msgs[3].Date != 5 {
		t.Fatalf("kept the copy dated %d, want the earlier (5)", a.msgs[3].Date)
	}
}

func TestMergeAppliesFlagChangesFromBothSides(t *testing.T) {
	base := state(3, msg(1, 1, `\Seen`, `$Work`), msg(2, 2))
	ours := state(3, msg(1, 1, `\Flagged`, `$Work`), msg(2, 2, `\Seen`))     // -\Seen +\Flagged on 1, +\Seen on 2
	theirs := state(3, msg(1, 1, `\Seen`, `$Later`), msg(2, 2, `\Answered`)) // -$Work +$Later on 1, +\Answered on 2
	want := `1:1[$Later \Flagged] 2:2[\Answered \Seen] next=3`
	if got := merge(t, base, ours, theirs); got != want {
		t.Fatalf("merged %s, want %s", got, want)
	}
}

func TestMergeWithoutABaseLosesNothing(t *testing.T) {
	ours := state(3, msg(1, 1, `\Seen`), msg(2, 2))
	theirs := state(3, msg(1, 1, `\Flagged`), msg(3, 2))
	want := `1:1[\Flagged \Seen] 2:2[] 3:3[] next=4`
	if got := merge(t, newFolderState(), ours, theirs); got != want {
		t.Fatalf("merged %s, want %s", got, want)
	}
}

// TestMergeIsDeterministic: random forks merge to the same folder
// whichever side merges, the merge entry leads there from either side,
// every message either side holds is kept, and UIDs are unique.
func TestMergeIsDeterministic(t *testing.T) {
	r := env.NewRand(6, 6)
	flags := []string{`\Seen`, `\Flagged`, `$A`}
	for round := range 300 {
		pick := func(n int) int { return int(r.Uint64() % uint64(n)) }
		base := newFolderState()
		for i := 0; i < pick(6); i++ {
			base.msgs[base.nextUID] = msg(byte(10+i), base.nextUID, flags[:pick(3)]...)
			base.nextUID++
		}
		branch := func(id byte) folderState {
			s := folderState{msgs: map[uint32]*Message{}, nextUID: base.nextUID}
			for uid, m := range base.msgs {
				s.msgs[uid] = m
			}
			for i := 0; i < pick(8); i++ {
				uids := sortedUIDs(s.msgs)
				switch k := pick(4); {
				case k == 0 && len(uids) > 0:
					delete(s.msgs, uids[pick(len(uids))])
				case k == 1 && len(uids) > 0:
					u := uids[pick(len(uids))]
					c := *s.msgs[u]
					c.Flags = editFlags(c.Flags, []string{flags[pick(3)]}, pick(2) == 0)
					s.msgs[u] = &c
				default:
					n := byte(pick(4)) + 40 // the same notification may come on both sides
					if pick(2) == 0 {
						n = id + byte(i)
					}
					s.msgs[s.nextUID] = msg(n, s.nextUID)
					s.nextUID++
				}
			}
			return s
		}
		ours, theirs := branch(100), branch(200)
		merged := mergeStates(base, ours, theirs)
		t.Run(fmt.Sprint(round), func(t *testing.T) { merge(t, base, ours, theirs) })
		ids := map[[16]byte]bool{}
		for _, m := range merged.msgs {
			ids[m.ID] = true
			if m.UID >= merged.nextUID {
				t.Fatalf("round %d: UID %d not below UIDNEXT %d", round, m.UID, merged.nextUID)
			}
		}
		for _, s := range []folderState{ours, theirs} {
			for _, m := range s.msgs {
				if !ids[m.ID] {
					t.Fatalf("round %d: message %d lost:\n base %s\n ours %s\n theirs %s\n merged %s",
						round, m.ID[0], describe(base), describe(ours), describe(theirs), describe(merged))
				}
			}
			if merged.nextUID < s.nextUID {
				t.Fatalf("round %d: UIDNEXT went back", round)
			}
		}
	}
}
