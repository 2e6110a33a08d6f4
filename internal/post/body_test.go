package post

import (
	"bytes"
	"crypto/sha256"
	"slices"
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/store/object"
)

func randomKey(t testing.TB, rnd env.Rand) ContentKey {
	t.Helper()
	k, err := NewContentKey(rnd)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestBodyRoundTrip(t *testing.T) {
	rnd := env.NewRand(1, 1)
	const cs = 64
	for _, size := range []int{0, 1, cs - 1, cs, cs + 1, 3*cs + 5, 4 * cs} {
		plain := make([]byte, size)
		rnd.Read(plain)
		key := randomKey(t, rnd)
		chunks, ref := SealBody(key, plain, cs)
		if want := max(1, (size+cs-1)/cs); len(chunks) != want || len(ref.Chunks) != want {
			t.Fatalf("size %d: %d chunks, want %d", size, len(chunks), want)
		}
		for i, c := range chunks {
			if ref.Chunks[i] != object.Key(sha256.Sum256(c)) {
				t.Fatalf("size %d: chunk %d is not named by its SHA-256", size, i)
			}
			if len(c) > cs+16 {
				t.Fatalf("size %d: chunk %d of %d bytes", size, i, len(c))
			}
		}
		if ref.Size != int64(size) || ref.Key != key {
			t.Fatalf("size %d: ref %+v", size, ref)
		}
		got, err := OpenBody(ref, chunks)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("size %d: round trip differs", size)
		}
	}
}

func TestBodyDefaultChunkSize(t *testing.T) {
	plain := make([]byte, ChunkSize+1)
	env.NewRand(2, 2).Read(plain)
	chunks, ref := SealBody(ConvergentKey(plain), plain, 0)
	if len(chunks) != 2 || len(chunks[1]) != 1+16 {
		t.Fatalf("%d chunks, want 2 with 1 byte in the last", len(chunks))
	}
	if got, err := OpenBody(ref, chunks); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("round trip: %v", err)
	}
}

func TestBodyNeedsTheKey(t *testing.T) {
	rnd := env.NewRand(3, 3)
	plain := []byte("Subject: salary review\r\n\r\nconfidential numbers")
	chunks, ref := SealBody(randomKey(t, rnd), plain, 16)
	// A storing node sees only the chunks: no plaintext in them ...
	for _, c := range chunks {
		for i := 0; i+6 <= len(plain); i++ {
			if bytes.Contains(c, plain[i:i+6]) {
				t.Fatalf("plaintext %q visible in a chunk", plain[i:i+6])
			}
		}
	}
	// ... and any key but the right one fails.
	for _, k := range []ContentKey{{}, randomKey(t, rnd), ConvergentKey(plain)} {
		wrong := ref
		wrong.Key = k
		_, err := OpenBody(wrong, chunks)
		wantErr(t, err, ErrTampered)
	}
}

func TestBodyTamper(t *testing.T) {
	rnd := env.NewRand(4, 4)
	plain := make([]byte, 100)
	rnd.Read(plain)
	chunks, ref := SealBody(randomKey(t, rnd), plain, 32)
	clone := func() ([][]byte, BodyRef) {
		cs := make([][]byte, len(chunks))
		for i, c := range chunks {
			cs[i] = bytes.Clone(c)
		}
		r := ref
		r.Chunks = slices.Clone(ref.Chunks)
		return cs, r
	}

	// Every byte of every chunk, with the ref kept.
	for i := range chunks {
		for j := range chunks[i] {
			cs, r := clone()
			cs[i][j] ^= 0x01
			_, err := OpenBody(r, cs)
			wantErr(t, err, ErrTampered)
			// Even with a ref re-pointed at the altered chunk (a careless or
			// malicious sender), the AEAD catches it.
			r.Chunks[i] = object.ImmutableKey(cs[i])
			_, err = OpenBody(r, cs)
			wantErr(t, err, ErrTampered)
		}
	}
	// Every byte of the ref.
	for i := range ref.Chunks {
		for j := range ref.Chunks[i] {
			cs, r := clone()
			r.Chunks[i][j] ^= 0x01
			_, err := OpenBody(r, cs)
			wantErr(t, err, ErrTampered)
		}
	}
	for j := range ref.Key {
		cs, r := clone()
		r.Key[j] ^= 0x01
		_, err := OpenBody(r, cs)
		wantErr(t, err, ErrTampered)
	}
	for _, d := range []int64{-1, 1, -ref.Size - 1} {
		cs, r := clone()
		r.Size += d
		_, err := OpenBody(r, cs)
		wantErr(t, err, ErrTampered)
	}

	// Reordering and truncation, even when the ref is made to agree.
	n := len(chunks)
	cs, r := clone()
	cs[0], cs[1] = cs[1], cs[0]
	_, err := OpenBody(r, cs)
	wantErr(t, err, ErrTampered)
	r.Chunks[0], r.Chunks[1] = r.Chunks[1], r.Chunks[0]
	_, err = OpenBody(r, cs)
	wantErr(t, err, ErrTampered)

	cs, r = clone()
	_, err = OpenBody(r, cs[:n-1])
	wantErr(t, err, ErrTampered)
	r.Chunks, r.Size = r.Chunks[:n-1], int64((n-1)*32)
	_, err = OpenBody(r, cs[:n-1])
	wantErr(t, err, ErrTampered)

	// Shapes that are never valid.
	for name, tc := range map[string]struct {
		ref    BodyRef
		chunks [][]byte
	}{
		"zero ref":       {BodyRef{}, nil},
		"no chunks":      {ref, nil},
		"nil chunk":      {BodyRef{Chunks: []object.Key{object.ImmutableKey(nil)}}, [][]byte{nil}},
		"short chunk":    {BodyRef{Chunks: []object.Key{object.ImmutableKey([]byte("x"))}}, [][]byte{[]byte("x")}},
		"negative size":  {BodyRef{Chunks: ref.Chunks, Key: ref.Key, Size: -1}, chunks},
		"one chunk more": {ref, append(slices.Clone(chunks), chunks[0])},
	} {
		if _, err := OpenBody(tc.ref, tc.chunks); err == nil {
			t.Errorf("%s: opened", name)
		} else {
			wantErr(t, err, ErrTampered)
		}
	}
}

func TestConvergentEncryption(t *testing.T) {
	rnd := env.NewRand(5, 5)
	spam := []byte("Subject: You won!\r\n\r\nClaim your prize now.")
	// Two gateways (or one, twice) inject the same message.
	c1, r1 := SealBody(ConvergentKey(spam), spam, 16)
	c2, r2 := SealBody(ConvergentKey(bytes.Clone(spam)), spam, 16)
	if !slices.EqualFunc(c1, c2, bytes.Equal) || !slices.Equal(r1.Chunks, r2.Chunks) || r1.Key != r2.Key {
		t.Fatal("the same content, convergently encrypted, is stored twice")
	}
	if ContentKey(sha256.Sum256(spam)) == ConvergentKey(spam) {
		t.Fatal("the convergent key is the bare hash: it must be domain-separated")
	}
	other := append(bytes.Clone(spam), '!')
	if _, r3 := SealBody(ConvergentKey(other), other, 16); r3.Key == r1.Key || r3.Chunks[0] == r1.Chunks[0] {
		t.Fatal("different content, same key or chunk")
	}
	// Random keys: the same content gives unrelated chunks.
	c4, r4 := SealBody(randomKey(t, rnd), spam, 16)
	c5, r5 := SealBody(randomKey(t, rnd), spam, 16)
	if r4.Key == r5.Key || bytes.Equal(c4[0], c5[0]) || r4.Chunks[0] == r5.Chunks[0] {
		t.Fatal("random keys give identical chunks")
	}
}

func TestNewContentKeyReaderFails(t *testing.T) {
	_, err := NewContentKey(bytes.NewReader(make([]byte, 31)))
	if err == nil {
		t.Fatal("a short read made a key")
	}
}
