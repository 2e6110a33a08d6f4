package post

import (
	"crypto/rand"
	"errors"
	"testing"

	"github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// TestSnapshotPartIsChecked: a part opens only with the log key and only
// if it holds what its checkpoint entry names (count and UID range).
func TestSnapshotPartIsChecked(t *testing.T) {
	var k, other LogKey
	rand.Read(k[:])
	rand.Read(other[:])
	f := (&Account{logKeys: []LogKey{k}, delivered: map[[16]byte]bool{}, bodies: map[object.Key]int{}}).newFolder(folderInfo{Name: "INBOX"})
	msgs := []*Message{{UID: 3}, {UID: 4}, {UID: 9}}
	b := SealEntry(rand.Reader, k, wire.MustMarshal(snapPart{Msgs: msgs}))
	ref := SnapChunk{Key: object.ImmutableKey(b), First: 3, Last: 9, N: 3}
	if got, err := f.openPart(ref, b); err != nil || len(got) != 3 {
		t.Fatalf("a sound part: %d messages, %v", len(got), err)
	}
	for name, bad := range map[string]SnapChunk{
		"count": {Key: ref.Key, First: 3, Last: 9, N: 2},
		"first": {Key: ref.Key, First: 1, Last: 9, N: 3},
		"last":  {Key: ref.Key, First: 3, Last: 10, N: 3},
	} {
		if _, err := f.openPart(bad, b); !errors.Is(err, ErrTampered) {
			t.Errorf("a part unlike its reference (%s): %v, want ErrTampered", name, err)
		}
	}
	forged := SealEntry(rand.Reader, other, wire.MustMarshal(snapPart{Msgs: msgs}))
	if _, err := f.openPart(ref, forged); !errors.Is(err, ErrTampered) {
		t.Errorf("a part sealed under another key: %v, want ErrTampered", err)
	}
	b[len(b)-1] ^= 1
	if _, err := f.openPart(ref, b); !errors.Is(err, ErrTampered) {
		t.Errorf("a flipped bit: %v, want ErrTampered", err)
	}
}

// TestSnapshotWithoutParts: a checkpoint written before snapshots had
// parts (the whole state in the entry) still reads.
func TestSnapshotWithoutParts(t *testing.T) {
	type oldOp struct {
		_     struct{} `cbor:",toarray"`
		Kind  OpKind
		UID   uint32
		Msg   *Message
		Flags []string
		Add   bool
		Snap  *legacySnapshot
	}
	type oldEntry struct {
		_    struct{} `cbor:",toarray"`
		Prev [32]byte
		Seq  uint64
		Ops  []oldOp
	}
	b := wire.MustMarshal(oldEntry{Seq: 64, Ops: []oldOp{{Kind: OpSnapshot, Snap: &legacySnapshot{NextUID: 9, Msgs: []*Message{{UID: 4}, {UID: 8}}}}}})
	var e entry
	if err := wire.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	if s := e.Ops[0].Snap; s == nil || s.NextUID != 9 || len(s.Msgs) != 2 || s.Msgs[1].UID != 8 || len(s.Chunks) != 0 {
		t.Fatalf("read %+v", e.Ops[0].Snap)
	}
	if err := wire.Unmarshal([]byte{0x83, 0x01, 0x02}, &Snapshot{}); err == nil {
		t.Fatal("a malformed snapshot decoded")
	}
}
