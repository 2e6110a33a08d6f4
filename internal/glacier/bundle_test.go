package glacier

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/wire"
)

type seedReader struct{ r *rand.Rand }

func (s seedReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(s.r.Uint32())
	}
	return len(b), nil
}

func testKey(t testing.TB, seed uint64) identity.SigningKey {
	t.Helper()
	k, err := identity.GenerateSigningKey(seedReader{rand.New(rand.NewPCG(seed, seed))})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testBundle(r *rand.Rand, objects, size int) *Bundle {
	b := &Bundle{Owner: id.FromUint64(r.Uint64(), r.Uint64()), Seq: r.Uint64N(100)}
	for i := 0; i < objects; i++ {
		o := Object{Kind: uint8(1 + r.IntN(3)), Data: randomData(r, size)}
		for j := range o.Key {
			o.Key[j] = byte(r.Uint32())
		}
		b.Objects = append(b.Objects, o)
	}
	return b
}

func TestBundleRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, b := range []*Bundle{
		{},
		{Owner: id.FromUint64(1, 2), Seq: 7, Objects: []Object{{Kind: 1}}},
		testBundle(r, 3, 100),
		testBundle(r, MaxBundleObjects, 10),
	} {
		enc, err := b.Encode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeBundle(enc)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := got.Encode()
		if !bytes.Equal(enc, again) {
			t.Fatal("bundle does not round trip")
		}
	}
	if _, err := testBundle(r, MaxBundleObjects+1, 0).Encode(); err == nil {
		t.Fatal("too many objects encoded")
	}
	if _, err := testBundle(r, 1, MaxBundleBytes).Encode(); err == nil {
		t.Fatal("oversized bundle encoded")
	}
	enc, _ := testBundle(r, 2, 5).Encode()
	for _, bad := range [][]byte{nil, {0x80}, enc[:len(enc)-1], append(append([]byte(nil), enc...), 0)} {
		if _, err := DecodeBundle(bad); err == nil {
			t.Fatalf("DecodeBundle accepted %x", bad)
		}
	}
	// A non-canonical encoding of the same value (Seq 7 as a two-byte
	// integer) is refused, so a bundle has one hash.
	canon, _ := (&Bundle{Seq: 7}).Encode()
	loose := append(append(append([]byte(nil), canon[:1+1+16]...), 0x18, 7), canon[1+1+16+1:]...)
	var plain Bundle
	if err := wire.Unmarshal(loose, &plain); err != nil || plain.Seq != 7 {
		t.Fatalf("test encoding %x is not a bundle: %v", loose, err)
	}
	if _, err := DecodeBundle(loose); !errors.Is(err, ErrMalformed) {
		t.Fatalf("non-canonical bundle %x accepted (canonical %x): %v", loose, canon, err)
	}
}

func TestManifestSignVerify(t *testing.T) {
	k, other := testKey(t, 1), testKey(t, 2)
	m := Manifest{Owner: id.FromUint64(3, 4), Seq: 5, Prev: Hash{1}, Code: Code{N: 256, M: 64},
		Size: 1000, Bundle: Hash{2}, Root: Hash{3}}
	m.Sign(k)
	if err := m.Verify(k.Public()); err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(other.Public()); err == nil {
		t.Fatal("verified under another key")
	}
	tamper := []func(*Manifest){
		func(m *Manifest) { m.Owner[0] ^= 1 },
		func(m *Manifest) { m.Seq++ },
		func(m *Manifest) { m.Prev[5] ^= 1 },
		func(m *Manifest) { m.Code.M-- },
		func(m *Manifest) { m.Code.N-- },
		func(m *Manifest) { m.Size++ },
		func(m *Manifest) { m.Bundle[0] ^= 1 },
		func(m *Manifest) { m.Root[31] ^= 1 },
		func(m *Manifest) { m.Sig = append([]byte(nil), m.Sig...); m.Sig[0] ^= 1 },
		func(m *Manifest) { m.Sig = nil },
	}
	for i, f := range tamper {
		c := m
		f(&c)
		if err := c.Verify(k.Public()); err == nil {
			t.Errorf("tamper %d verified", i)
		}
		if c.Hash() == m.Hash() {
			t.Errorf("tamper %d keeps the hash", i)
		}
	}
}

func TestBundleKey(t *testing.T) {
	a := BundleKey(id.FromUint64(1, 2), 0)
	if a != BundleKey(id.FromUint64(1, 2), 0) {
		t.Fatal("not deterministic")
	}
	if a == BundleKey(id.FromUint64(1, 2), 1) || a == BundleKey(id.FromUint64(1, 3), 0) {
		t.Fatal("collides across owner or seq")
	}
}

func TestFragmentsRebuild(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	k := testKey(t, 3)
	for _, tc := range []struct {
		c       Code
		objects int
		size    int
	}{
		{Code{N: 2, M: 1}, 0, 0},
		{Code{N: 5, M: 3}, 1, 1},
		{Code{N: 16, M: 4}, 10, 333},
		{Code{N: 250, M: 65}, 20, 2000},
		{Code{N: 256, M: 66}, 7, 100000},
	} {
		b := testBundle(r, tc.objects, tc.size)
		m, frags, err := MakeFragments(tc.c, b, Hash{9}, k)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Verify(k.Public()); err != nil || m.Prev != (Hash{9}) || m.Owner != b.Owner || m.Seq != b.Seq {
			t.Fatalf("%s: manifest %+v: %v", tc.c, m, err)
		}
		if len(frags) != tc.c.N {
			t.Fatalf("%s: %d fragments", tc.c, len(frags))
		}
		for i, f := range frags {
			enc, err := f.Encode()
			if err != nil {
				t.Fatal(err)
			}
			g, err := DecodeFragment(enc)
			if err != nil {
				t.Fatalf("%s fragment %d: %v", tc.c, i, err)
			}
			if err := g.Check(); err != nil || g.Index != i {
				t.Fatalf("%s fragment %d: Check: %v", tc.c, i, err)
			}
			frags[i] = g
		}
		keep := r.Perm(tc.c.N)[:tc.c.M]
		some := make([]*Fragment, 0, tc.c.M+2)
		for _, i := range keep {
			some = append(some, frags[i])
		}
		some = append(some, nil, frags[keep[0]]) // gaps and repeats are ignored
		got, err := Rebuild(some)
		if err != nil {
			t.Fatalf("%s: Rebuild: %v", tc.c, err)
		}
		if !reflect.DeepEqual(normalise(got), normalise(b)) {
			t.Fatalf("%s: rebuilt bundle differs", tc.c)
		}
		if _, err := Rebuild(some[:tc.c.M-1]); !errors.Is(err, ErrTooFew) {
			t.Fatalf("%s: Rebuild from M-1: %v", tc.c, err)
		}
	}
	if _, err := Rebuild(nil); !errors.Is(err, ErrTooFew) {
		t.Fatalf("Rebuild(nil): %v", err)
	}
}

// normalise maps empty slices to nil, as CBOR's round trip does not
// distinguish what reflect.DeepEqual does.
func normalise(b *Bundle) *Bundle {
	c := *b
	if len(c.Objects) == 0 {
		c.Objects = nil
	}
	c.Objects = append([]Object(nil), c.Objects...)
	for i := range c.Objects {
		if len(c.Objects[i].Data) == 0 {
			c.Objects[i].Data = nil
		}
	}
	return &c
}

func TestFragmentCheckRejects(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	k := testKey(t, 4)
	b := testBundle(r, 3, 500)
	_, frags, err := MakeFragments(Code{N: 8, M: 3}, b, Hash{}, k)
	if err != nil {
		t.Fatal(err)
	}
	_, others, _ := MakeFragments(Code{N: 8, M: 3}, testBundle(r, 3, 500), Hash{}, k)
	tamper := map[string]func(*Fragment){
		"data":        func(f *Fragment) { f.Data = append([]byte(nil), f.Data...); f.Data[0] ^= 1 },
		"short data":  func(f *Fragment) { f.Data = f.Data[1:] },
		"index":       func(f *Fragment) { f.Index ^= 1 },
		"index range": func(f *Fragment) { f.Index = 8 },
		"negative":    func(f *Fragment) { f.Index = -1 },
		"proof":       func(f *Fragment) { f.Proof = append([]Hash(nil), f.Proof...); f.Proof[0][0] ^= 1 },
		"proof short": func(f *Fragment) { f.Proof = f.Proof[1:] },
		"root":        func(f *Fragment) { f.Manifest.Root[0] ^= 1 },
		"size":        func(f *Fragment) { f.Manifest.Size += 10 },
		"huge size":   func(f *Fragment) { f.Manifest.Size = 1 << 62 },
		"code":        func(f *Fragment) { f.Manifest.Code = Code{N: 8, M: 8} },
	}
	for name, fn := range tamper {
		f := *frags[2]
		fn(&f)
		if err := f.Check(); err == nil {
			t.Errorf("%s: Check accepted", name)
		}
		set := []*Fragment{&f, frags[3], frags[4], frags[5]}
		if _, err := Rebuild(set); err == nil {
			t.Errorf("%s: Rebuild accepted", name)
		}
	}
	if _, err := Rebuild([]*Fragment{frags[0], frags[1], others[2]}); err == nil {
		t.Error("Rebuild mixed two manifests")
	}
	// A manifest whose Bundle hash lies: the fragments check, the
	// decoded bytes do not.
	m := frags[0].Manifest
	m.Bundle[0] ^= 1
	var lying []*Fragment
	for _, f := range frags[:3] {
		g := *f
		g.Manifest = m
		lying = append(lying, &g)
	}
	if _, err := Rebuild(lying); err == nil {
		t.Error("Rebuild accepted a wrong bundle hash")
	}
}

func FuzzDecodeBundle(f *testing.F) {
	r := rand.New(rand.NewPCG(17, 18))
	for _, b := range []*Bundle{{}, testBundle(r, 1, 0), testBundle(r, 3, 20)} {
		enc, _ := b.Encode()
		f.Add(enc)
	}
	f.Add([]byte{0x83, 0x40, 0x00, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBundle(data)
		if err != nil {
			return
		}
		enc, err := b.Encode()
		if err != nil || !bytes.Equal(enc, data) {
			t.Fatalf("accepted bundle does not re-encode to its input: %v", err)
		}
	})
}

func FuzzDecodeFragment(f *testing.F) {
	r := rand.New(rand.NewPCG(19, 20))
	k := testKey(f, 5)
	_, frags, err := MakeFragments(Code{N: 5, M: 2}, testBundle(r, 2, 30), Hash{}, k)
	if err != nil {
		f.Fatal(err)
	}
	for _, fr := range frags[:3] {
		enc, _ := fr.Encode()
		f.Add(enc)
	}
	f.Add([]byte{0x84})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := DecodeFragment(data)
		if err != nil {
			return
		}
		enc, err := fr.Encode()
		if err != nil || !bytes.Equal(enc, data) {
			t.Fatalf("accepted fragment does not re-encode to its input: %v", err)
		}
		if fr.Check() == nil {
			// A checked fragment is safe to rebuild from, alone or twice.
			Rebuild([]*Fragment{fr, fr})
		}
	})
}

func BenchmarkRebuildFullBundle(b *testing.B) {
	r := rand.New(rand.NewPCG(21, 22))
	k := testKey(b, 6)
	bundle := testBundle(r, 16, (MaxBundleBytes-16*64)/16)
	c := DefaultConfig().Code
	_, frags, err := MakeFragments(c, bundle, Hash{}, k)
	if err != nil {
		b.Fatal(err)
	}
	// The worst case for decoding: every data fragment lost.
	parity := frags[c.N-c.M:]
	size := frags[0].Manifest.Size
	b.SetBytes(int64(size))
	for b.Loop() {
		if _, err := Rebuild(parity); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMakeFragmentsFullBundle(b *testing.B) {
	r := rand.New(rand.NewPCG(23, 24))
	k := testKey(b, 7)
	bundle := testBundle(r, 16, (MaxBundleBytes-16*64)/16)
	enc, _ := bundle.Encode()
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, _, err := MakeFragments(DefaultConfig().Code, bundle, Hash{}, k); err != nil {
			b.Fatal(err)
		}
	}
}
