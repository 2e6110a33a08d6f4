package identity

import "strings"

// Bech32 (BIP 173), just what this package needs: encoding an age X25519
// secret key from raw bytes (age generates keys only from crypto/rand and
// keeps its bech32 package internal; parsing is left to age), and the BCH
// checksum that guards recovery codes. Written from the BIP; the tests
// check it against age's own encoder.

const bech32Charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"

// Checksum constants: BIP 173 (bech32) for age keys, BIP 350 (bech32m) for
// recovery codes, whose length is fixed anyway.
const (
	bech32Const  = 1
	bech32mConst = 0x2bc830a3
)

func bech32Polymod(values []byte) uint32 {
	gen := [5]uint32{0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3}
	chk := uint32(1)
	for _, v := range values {
		top := chk >> 25
		chk = (chk&0x1ffffff)<<5 ^ uint32(v)
		for i := range 5 {
			if (top>>i)&1 == 1 {
				chk ^= gen[i]
			}
		}
	}
	return chk
}

// bech32HRPExpand spreads the human-readable part (lowercase ASCII) over
// 5-bit values so that it is covered by the checksum.
func bech32HRPExpand(hrp string) []byte {
	out := make([]byte, 0, 2*len(hrp)+1)
	for i := 0; i < len(hrp); i++ {
		out = append(out, hrp[i]>>5)
	}
	out = append(out, 0)
	for i := 0; i < len(hrp); i++ {
		out = append(out, hrp[i]&31)
	}
	return out
}

// bech32Checksum returns the six 5-bit check values for data under hrp.
func bech32Checksum(hrp string, data []byte, constant uint32) [6]byte {
	values := append(bech32HRPExpand(hrp), data...)
	values = append(values, 0, 0, 0, 0, 0, 0)
	mod := bech32Polymod(values) ^ constant
	var out [6]byte
	for i := range out {
		out[i] = byte(mod>>(5*(5-i))) & 31
	}
	return out
}

// bech32Verify reports whether data (check values included) is valid
// under hrp.
func bech32Verify(hrp string, data []byte, constant uint32) bool {
	return bech32Polymod(append(bech32HRPExpand(hrp), data...)) == constant
}

// bech32Encode encodes 8-bit data under a lowercase hrp as plain bech32.
func bech32Encode(hrp string, data []byte) string {
	var values []byte
	acc, n := uint32(0), 0
	for _, b := range data {
		acc = acc<<8 | uint32(b)
		n += 8
		for n >= 5 {
			n -= 5
			values = append(values, byte(acc>>n)&31)
		}
	}
	if n > 0 {
		values = append(values, byte(acc<<(5-n))&31)
	}
	var sb strings.Builder
	sb.WriteString(hrp)
	sb.WriteByte('1')
	for _, v := range values {
		sb.WriteByte(bech32Charset[v])
	}
	for _, v := range bech32Checksum(hrp, values, bech32Const) {
		sb.WriteByte(bech32Charset[v])
	}
	return sb.String()
}
