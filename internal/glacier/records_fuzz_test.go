package glacier

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/epost-mail/epost/internal/wire"
	"github.com/epost-mail/epost/internal/wire/wiretest"
)

// FuzzStoredRecords decodes the input as each record a holder keeps in
// its store (a fragment record, a journal entry, a journal mark), as
// Attach reads them back after a restart: each must round-trip, and a
// record's fragment decodes only from its canonical encoding.
func FuzzStoredRecords(f *testing.F) {
	r := rand.New(rand.NewPCG(23, 24))
	_, frags, err := MakeFragments(Code{N: 5, M: 2}, testBundle(r, 2, 30), Hash{}, testKey(f, 7))
	if err != nil {
		f.Fatal(err)
	}
	enc, _ := frags[0].Encode()
	f.Add(wire.MustMarshal(wire.GlacierRecord{Fragment: enc}))
	f.Add(wire.MustMarshal(wire.GlacierRecord{Address: "alice@example.org", Cert: []byte("cert")}))
	f.Add(wire.MustMarshal(journalEntry{Kind: 2, Key: [32]byte{1}}))
	f.Add(wire.MustMarshal(journalMark{Done: 40}))
	f.Fuzz(func(t *testing.T, b []byte) {
		wiretest.RoundTrip[journalEntry](t, b)
		wiretest.RoundTrip[journalMark](t, b)
		rec, ok := wiretest.RoundTrip[wire.GlacierRecord](t, b)
		if !ok {
			return
		}
		if fr, err := DecodeFragment(rec.Fragment); err == nil {
			if again, err := fr.Encode(); err != nil || !bytes.Equal(again, rec.Fragment) {
				t.Fatalf("fragment does not re-encode to its record's bytes: %v", err)
			}
		}
	})
}
