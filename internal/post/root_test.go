package post

import (
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/epost-mail/epost/internal/wire"
)

// describeRoot lists a root's folders as name(id)[-sub], then the rest.
func describeRoot(r *rootRecord) string {
	out := ""
	for _, f := range r.Folders {
		sub := ""
		if f.Unsubscribed {
			sub = "-unsub"
		}
		out += fmt.Sprintf("%s(%d)%s ", f.Name, f.ID[0], sub)
	}
	return out + fmt.Sprintf("archive=%d certs=%d", r.Archive.Seq, len(r.Certs))
}

// mergeBoth merges a and b both ways round and checks that the order
// does not matter.
func mergeBoth(t *testing.T, a, b *rootRecord) *rootRecord {
	t.Helper()
	x, y := mergeRoots(a, b), mergeRoots(b, a)
	if !reflect.DeepEqual(x, y) {
		t.Fatalf("the root merge depends on the order:\n %s\n %s", describeRoot(x), describeRoot(y))
	}
	return x
}

func TestRootMergeKeepsARenameAndSubscriptionsFromEitherSide(t *testing.T) {
	inbox := folderInfo{Name: "INBOX", ID: [16]byte{1}}
	work := folderInfo{Name: "Work", ID: [16]byte{2}}
	old := folderInfo{Name: "Old", ID: [16]byte{3}}
	// Ours renamed Work at version 7; theirs unsubscribed from it at
	// version 6, and deleted Old (a delete only one side made: kept).
	renamed := work
	renamed.Name, renamed.NameSince = "Projects", 7
	unsub := work
	unsub.Unsubscribed, unsub.SubSince = true, 6
	ours := &rootRecord{Folders: []folderInfo{inbox, old, renamed}, Archive: ArchiveRoot{Seq: 3, Manifest: [32]byte{3}},
		Certs: []certRef{{Generation: 1, Hash: [32]byte{1}}}}
	theirs := &rootRecord{Folders: []folderInfo{inbox, unsub}, Archive: ArchiveRoot{Seq: 5, Manifest: [32]byte{5}},
		Certs: []certRef{{Generation: 2, Hash: [32]byte{2}}, {Generation: 1, Hash: [32]byte{1}}}}
	got := mergeBoth(t, ours, theirs)
	if d, want := describeRoot(got), "INBOX(1) Old(3) Projects(2)-unsub archive=5 certs=2"; d != want {
		t.Fatalf("merged %s, want %s", d, want)
	}
	if got.Archive.Manifest != ([32]byte{5}) || got.Certs[0].Generation != 2 {
		t.Fatalf("archive %+v, certs %+v: want the higher archive sequence and the newest certificate first", got.Archive, got.Certs)
	}
}

func TestRootMergeSeparatesFoldersOfOneName(t *testing.T) {
	a := &rootRecord{Folders: []folderInfo{{Name: "Work", ID: [16]byte{9, 1, 2, 3}}}}
	b := &rootRecord{Folders: []folderInfo{{Name: "Work", ID: [16]byte{4, 5, 6, 7}}}}
	if d, want := describeRoot(mergeBoth(t, a, b)), "Work(4) Work~09010203(9) archive=0 certs=0"; d != want {
		t.Fatalf("merged %s, want %s", d, want)
	}
}

func TestRootRecordOfTheFirstLayoutStillOpens(t *testing.T) {
	b := wire.MustMarshal(rootRecordV1{Folders: []folderInfoV1{{Name: "INBOX", ID: [16]byte{1}, UIDValidity: 7}}, Writer: [16]byte{2}})
	r, err := decodeRoot(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Folders) != 1 || r.Folders[0].Name != "INBOX" || r.Folders[0].UIDValidity != 7 || r.Folders[0].Unsubscribed || r.Writer != ([16]byte{2}) {
		t.Fatalf("opened %+v", r)
	}
	if _, err := decodeRoot([]byte{0x83, 1}); err == nil {
		t.Fatal("opened a malformed root record")
	}
}

func TestRootHistoryTellsBehindFromBranched(t *testing.T) {
	base := &rootRecord{Folders: []folderInfo{{Name: "INBOX", ID: [16]byte{1}}}}
	next := func(r *rootRecord, name string, id byte) *rootRecord {
		c := *r
		c.Folders = append(slices.Clone(r.Folders), folderInfo{Name: name, ID: [16]byte{id}})
		c.History = append([][32]byte{rootID(r)}, r.History...)
		return &c
	}
	a1 := next(base, "A", 2)
	a2 := next(a1, "A2", 3)
	b1 := next(base, "B", 4)
	if !descends(a2, base) || !descends(a2, a1) || !descends(a1, a1) {
		t.Fatal("a record written on top of another is not seen as newer")
	}
	if descends(a2, b1) || descends(b1, a2) || descends(base, a1) {
		t.Fatal("records on two branches are seen as one behind the other")
	}
	m := mergeBoth(t, a2, b1)
	if !descends(m, a2) || !descends(m, b1) || !descends(m, base) {
		t.Fatal("a merge is not seen as newer than its parents and their past")
	}
	if d, want := describeRoot(m), "A(2) A2(3) B(4) INBOX(1) archive=0 certs=0"; d != want {
		t.Fatalf("merged %s, want %s", d, want)
	}
}
