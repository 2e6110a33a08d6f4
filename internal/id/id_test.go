package id

import (
	"crypto/sha256"
	"errors"
	"testing"
)

func mustParse(t *testing.T, s string) ID {
	t.Helper()
	x, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

const (
	zero = "00000000000000000000000000000000"
	one  = "00000000000000000000000000000001"
	max  = "ffffffffffffffffffffffffffffffff"
	half = "80000000000000000000000000000000"
)

func TestDigitsAndPrefix(t *testing.T) {
	x := mustParse(t, "0123456789abcdef0123456789abcdef")
	for i := 0; i < Digits; i++ {
		if got, want := x.Digit(i), i%16; got != want {
			t.Fatalf("Digit(%d) = %d, want %d", i, got, want)
		}
	}
	cases := []struct {
		a, b string
		want int
	}{
		{zero, zero, 32},
		{zero, one, 31},
		{zero, half, 0},
		{"12340000000000000000000000000000", "12350000000000000000000000000000", 3},
		{"1234567890abcdef1000000000000000", "1234567890abcdef2000000000000000", 16},
		{"1234567890abcdef1000000000000000", "1234567890abcdef8000000000000000", 16},
		{"1234567890abcdef1200000000000000", "1234567890abcdef1300000000000000", 17},
	}
	for _, c := range cases {
		a, b := mustParse(t, c.a), mustParse(t, c.b)
		if got := a.SharedPrefix(b); got != c.want {
			t.Errorf("SharedPrefix(%s, %s) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := b.SharedPrefix(a); got != c.want {
			t.Errorf("SharedPrefix not symmetric for %s, %s", c.a, c.b)
		}
	}
	y := x.WithDigit(5, 0xe).WithDigit(6, 0)
	if y.Digit(5) != 0xe || y.Digit(6) != 0 || y.Digit(4) != 4 || y.Digit(7) != 7 {
		t.Fatalf("WithDigit: %s", y)
	}
}

func TestRingDistanceWrapsAround(t *testing.T) {
	cases := []struct {
		name          string
		a, b          string
		cw, ccw, dist string
	}{
		{"adjacent", zero, one, one, max, one},
		{"wrap forward", max, one, "00000000000000000000000000000002", "fffffffffffffffffffffffffffffffe", "00000000000000000000000000000002"},
		{"wrap backward", one, max, "fffffffffffffffffffffffffffffffe", "00000000000000000000000000000002", "00000000000000000000000000000002"},
		{"opposite", zero, half, half, half, half},
		{"same", half, half, zero, zero, zero},
		{"carry across halves", "0000000000000000ffffffffffffffff", "00000000000000010000000000000000", one, max, one},
	}
	for _, c := range cases {
		a, b := mustParse(t, c.a), mustParse(t, c.b)
		if got := a.CW(b).String(); got != c.cw {
			t.Errorf("%s: CW = %s, want %s", c.name, got, c.cw)
		}
		if got := a.CCW(b).String(); got != c.ccw {
			t.Errorf("%s: CCW = %s, want %s", c.name, got, c.ccw)
		}
		if got := a.Dist(b).String(); got != c.dist {
			t.Errorf("%s: Dist = %s, want %s", c.name, got, c.dist)
		}
		if a.Dist(b) != b.Dist(a) {
			t.Errorf("%s: Dist not symmetric", c.name)
		}
	}
}

func TestCloserAndBetween(t *testing.T) {
	key := mustParse(t, "00000000000000000000000000000010")
	a := mustParse(t, "fffffffffffffffffffffffffffffff8") // 0x18 away, across zero
	b := mustParse(t, "00000000000000000000000000000030") // 0x20 away
	if !Closer(key, a, b) || Closer(key, b, a) {
		t.Fatal("wrap-around neighbour should be closer")
	}
	// Equidistant: the smaller id wins, the same for everyone.
	c := mustParse(t, "00000000000000000000000000000008")
	d := mustParse(t, "00000000000000000000000000000018")
	if !Closer(key, c, d) || Closer(key, d, c) {
		t.Fatal("tie must break towards the smaller id")
	}
	if Closer(key, c, c) {
		t.Fatal("a node is not closer than itself")
	}
	z, o, m := mustParse(t, zero), mustParse(t, one), mustParse(t, max)
	h := mustParse(t, half)
	cases := []struct {
		a, x, b ID
		want    bool
	}{
		{z, o, h, true},
		{z, h, o, false},
		{h, m, o, true}, // arc wraps through zero
		{h, z, o, true},
		{h, o, o, false}, // exclusive ends
		{h, h, o, false},
		{z, h, z, true}, // a == b: everything else
		{z, z, z, false},
	}
	for i, c := range cases {
		if got := Between(c.a, c.x, c.b); got != c.want {
			t.Errorf("case %d: Between(%s, %s, %s) = %v", i, c.a.Short(), c.x.Short(), c.b.Short(), got)
		}
	}
}

func TestHashingAndCodec(t *testing.T) {
	u := ForUser("alice@demo.epost")
	sum := sha256.Sum256([]byte("alice@demo.epost"))
	if u.ID != FromHash(sum) || u.ID != FromBytes([]byte("alice@demo.epost")) {
		t.Fatal("user id is not the truncated SHA-256 of the address")
	}
	b, _ := u.MarshalBinary()
	var back ID
	if err := back.UnmarshalBinary(b); err != nil || back != u.ID {
		t.Fatal("binary round trip failed")
	}
	if err := back.UnmarshalBinary(b[:15]); !errors.Is(err, ErrLength) {
		t.Fatalf("short input: %v", err)
	}
	if _, err := Parse("xyz"); !errors.Is(err, ErrLength) {
		t.Fatalf("Parse short: %v", err)
	}
	if _, err := Parse("zz" + zero[2:]); err == nil {
		t.Fatal("Parse accepted non-hex")
	}
	x := FromUint64(1, 2)
	if hi, lo := x.Uint64s(); hi != 1 || lo != 2 {
		t.Fatal("Uint64s")
	}
	if x.Add(mustParse(t, max)) != FromUint64(1, 1) {
		t.Fatal("Add does not wrap")
	}
	if f := mustParse(t, half).Float(); f != 0.5 {
		t.Fatalf("Float(half) = %v", f)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(zero)
	f.Add(max)
	f.Add("0123")
	f.Fuzz(func(t *testing.T, s string) {
		x, err := Parse(s)
		if err == nil && x.String() != toLowerHex(s) {
			t.Fatalf("Parse(%q) round trips to %s", s, x)
		}
	})
}

func toLowerHex(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'F' {
			b[i] = c + 32
		}
	}
	return string(b)
}
