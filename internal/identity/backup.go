package identity

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
)

// Recovery codes (DESIGN.md section 3). A user's key backup is stored in
// the network where any member can fetch it, so it is sealed with a
// generated code, never a human passphrase that could be guessed offline.
//
// A code is 26 random symbols (130 bits) and 6 check symbols in Crockford's
// base32 (no I, L, O or U, so nothing reads two ways), printed as eight
// groups of four: "7K2M-QD4X-...". The check symbols are a BIP 350
// (bech32m) BCH checksum over the symbols, which catches any typo that
// changes up to four characters. On input, case, spaces and dashes do not
// matter, and O, I and L are read as 0, 1 and 1.
const (
	recoveryAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	recoveryData     = 26
	recoveryCheck    = 6
	recoverySymbols  = recoveryData + recoveryCheck
	recoveryGroup    = 4
	// recoveryHRP keys the checksum to epost, so a bech32m string from
	// elsewhere is not mistaken for a recovery code.
	recoveryHRP = "epost-recovery"
)

// RecoveryCodeBits is the entropy of a recovery code.
const RecoveryCodeBits = 5 * recoveryData

// Scrypt work factors (log2 N) for key backups. The default costs about a
// second and 256 MiB to try one code, on top of the code's 130 bits.
const (
	DefaultScryptWorkFactor = 18
	// MaxScryptWorkFactor bounds the memory (1 GiB) that opening a backup
	// fetched from the network may cost.
	MaxScryptWorkFactor = 20
)

// maxBackupPlain bounds the decrypted size of a backup; user keys are a
// few hundred bytes.
const maxBackupPlain = 64 << 10

// NewRecoveryCode draws a fresh recovery code from r.
func NewRecoveryCode(r io.Reader) (string, error) {
	var sym [recoverySymbols]byte
	if _, err := io.ReadFull(r, sym[:recoveryData]); err != nil {
		return "", fmt.Errorf("identity: new recovery code: read randomness: %w", err)
	}
	for i := range recoveryData {
		sym[i] &= 31 // 256 is a multiple of 32: still uniform
	}
	check := bech32Checksum(recoveryHRP, sym[:recoveryData], bech32mConst)
	copy(sym[recoveryData:], check[:])
	return formatRecoveryCode(sym), nil
}

func formatRecoveryCode(sym [recoverySymbols]byte) string {
	var sb strings.Builder
	for i, v := range sym {
		if i > 0 && i%recoveryGroup == 0 {
			sb.WriteByte('-')
		}
		sb.WriteByte(recoveryAlphabet[v])
	}
	return sb.String()
}

// NormalizeRecoveryCode checks a recovery code as a person typed it and
// returns its canonical printed form. Errors wrap ErrBadRecoveryCode and
// never quote the code.
func NormalizeRecoveryCode(s string) (string, error) {
	var sym [recoverySymbols]byte
	n := 0
	for _, c := range s {
		switch c {
		case ' ', '\t', '\r', '\n', '-':
			continue
		case 'o', 'O':
			c = '0'
		case 'i', 'I', 'l', 'L':
			c = '1'
		}
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		v := strings.IndexRune(recoveryAlphabet, c)
		if v < 0 {
			return "", fmt.Errorf("%w: character %q is never used in recovery codes", ErrBadRecoveryCode, c)
		}
		if n == recoverySymbols {
			return "", fmt.Errorf("%w: more than %d characters", ErrBadRecoveryCode, recoverySymbols)
		}
		sym[n] = byte(v)
		n++
	}
	if n != recoverySymbols {
		return "", fmt.Errorf("%w: %d characters, want %d", ErrBadRecoveryCode, n, recoverySymbols)
	}
	if !bech32Verify(recoveryHRP, sym[:], bech32mConst) {
		return "", fmt.Errorf("%w: checksum does not match: a character is mistyped", ErrBadRecoveryCode)
	}
	return formatRecoveryCode(sym), nil
}

// SealBackup encrypts keys with age under the recovery code (scrypt,
// work factor 2^workFactor, at most MaxScryptWorkFactor). Use
// DefaultScryptWorkFactor outside tests. The code is normalised first, so
// any way of typing it opens the backup. The output is an age file; age
// draws its file key and salt from crypto/rand, so it is not reproducible.
func SealBackup(keys UserKeys, code string, workFactor int) ([]byte, error) {
	plain, err := encodeUserKeys(keys)
	if err != nil {
		return nil, fmt.Errorf("identity: seal backup: %w", err)
	}
	return sealWithCode(plain, code, workFactor)
}

// SealCABackup encrypts the CA's private key under a recovery code, as
// SealBackup does a user's keys: a copy to keep apart from the machine
// that holds ca.key.
func SealCABackup(ca *CA, code string, workFactor int) ([]byte, error) {
	return sealWithCode(encodeCAKey(ca), code, workFactor)
}

// OpenCABackup decrypts a backup made by SealCABackup.
func OpenCABackup(data []byte, code string) (*CA, error) {
	plain, err := openWithCode(data, code, MaxScryptWorkFactor)
	if err != nil {
		return nil, err
	}
	ca, err := decodeCAKey(plain)
	if err != nil {
		return nil, fmt.Errorf("identity: open backup: %w", err)
	}
	return ca, nil
}

// sealWithCode encrypts plain with age under a recovery code.
func sealWithCode(plain []byte, code string, workFactor int) ([]byte, error) {
	norm, err := NormalizeRecoveryCode(code)
	if err != nil {
		return nil, fmt.Errorf("identity: seal backup: %w", err)
	}
	if workFactor < 1 || workFactor > MaxScryptWorkFactor {
		return nil, fmt.Errorf("identity: seal backup: scrypt work factor %d outside 1..%d", workFactor, MaxScryptWorkFactor)
	}
	rcp, err := age.NewScryptRecipient(norm)
	if err != nil {
		return nil, fmt.Errorf("identity: seal backup: %w", err)
	}
	rcp.SetWorkFactor(workFactor)
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, rcp)
	if err != nil {
		return nil, fmt.Errorf("identity: seal backup: %w", err)
	}
	if _, err := w.Write(plain); err != nil {
		return nil, fmt.Errorf("identity: seal backup: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("identity: seal backup: %w", err)
	}
	return buf.Bytes(), nil
}

// OpenBackup decrypts a backup made by SealBackup. A well-formed code that
// does not fit gives ErrWrongRecoveryCode; a mistyped one
// ErrBadRecoveryCode; a damaged or foreign file ErrMalformed.
func OpenBackup(data []byte, code string) (UserKeys, error) {
	return openBackup(data, code, MaxScryptWorkFactor)
}

// openBackup is OpenBackup with a bound on the scrypt work factor, which
// the fuzz test keeps small.
func openBackup(data []byte, code string, maxWorkFactor int) (UserKeys, error) {
	plain, err := openWithCode(data, code, maxWorkFactor)
	if err != nil {
		return UserKeys{}, err
	}
	keys, err := decodeUserKeys(plain)
	if err != nil {
		return UserKeys{}, fmt.Errorf("identity: open backup: %w", err)
	}
	return keys, nil
}

// openWithCode decrypts what sealWithCode made. A well-formed code that
// does not fit gives ErrWrongRecoveryCode; a mistyped one
// ErrBadRecoveryCode; a damaged or foreign file ErrMalformed.
func openWithCode(data []byte, code string, maxWorkFactor int) ([]byte, error) {
	norm, err := NormalizeRecoveryCode(code)
	if err != nil {
		return nil, fmt.Errorf("identity: open backup: %w", err)
	}
	idt, err := age.NewScryptIdentity(norm)
	if err != nil {
		return nil, fmt.Errorf("identity: open backup: %w", err)
	}
	idt.SetMaxWorkFactor(maxWorkFactor)
	r, err := age.Decrypt(bytes.NewReader(data), idt)
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		if errors.As(err, &nomatch) && len(nomatch.StanzaTypes) == 1 && nomatch.StanzaTypes[0] == "scrypt" {
			return nil, fmt.Errorf("identity: open backup: %w", ErrWrongRecoveryCode)
		}
		return nil, fmt.Errorf("identity: open backup: %w", malformed("not a recovery-code backup: %v", err))
	}
	plain, err := io.ReadAll(io.LimitReader(r, maxBackupPlain+1))
	if err != nil {
		return nil, fmt.Errorf("identity: open backup: %w", malformed("damaged: %v", err))
	}
	if len(plain) > maxBackupPlain {
		return nil, fmt.Errorf("identity: open backup: %w", malformed("more than %d bytes", maxBackupPlain))
	}
	return plain, nil
}
