package main

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/scrypt"

	"github.com/epost-mail/epost/internal/identity"
)

// PasswordFile holds a user's IMAP/SMTP password hash, next to the keys.
const PasswordFile = "password"

// scrypt parameters for password hashes: about 50 ms per check here, so a
// brute-force attempt costs the attacker, and the servers rate-limit
// failures anyway.
const pwN, pwR, pwP = 1 << 15, 8, 1

// maxScryptCost bounds N*r of a stored hash, twice what hashPassword
// uses: scrypt needs 128*N*r bytes (64 MiB here), and a node checks
// login attempts concurrently, so a hand-edited password file must not
// make each attempt take gigabytes.
const maxScryptCost = 2 * pwN * pwR

func hashPassword(pw string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	h, err := scrypt.Key([]byte(pw), salt, pwN, pwR, pwP, 32)
	if err != nil {
		return "", err
	}
	enc := base64.RawStdEncoding
	return fmt.Sprintf("scrypt$%d$%d$%d$%s$%s", pwN, pwR, pwP, enc.EncodeToString(salt), enc.EncodeToString(h)), nil
}

func checkPassword(stored, pw string) bool {
	n, r, salt, want, ok := parseHash(stored)
	if !ok {
		return false
	}
	got, err := scrypt.Key([]byte(pw), salt, n, r, pwP, 32)
	return err == nil && subtle.ConstantTimeCompare(got, want) == 1
}

// parseHash reads a stored hash, refusing costs above maxScryptCost.
func parseHash(stored string) (n, r int, salt, want []byte, ok bool) {
	var p int
	parts := strings.Split(strings.TrimSpace(stored), "$")
	if len(parts) != 6 || parts[0] != "scrypt" {
		return 0, 0, nil, nil, false
	}
	if _, err := fmt.Sscanf(parts[1]+" "+parts[2]+" "+parts[3], "%d %d %d", &n, &r, &p); err != nil || n < 2 || r < 1 || p != pwP || n > maxScryptCost/r {
		return 0, 0, nil, nil, false
	}
	enc := base64.RawStdEncoding
	salt, err1 := enc.DecodeString(parts[4])
	want, err2 := enc.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) != 32 {
		return 0, 0, nil, nil, false
	}
	return n, r, salt, want, true
}

// userPasswd sets the password a user's mail client logs in with.
func userPasswd(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("user passwd", "[--dir DIR] --password-file FILE ADDRESS", stderr)
	dir := flags.String("dir", defaultDataDir, "data directory holding the user")
	file := flags.String("password-file", "", "file whose first line is the new password (- reads standard input)")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *file == "" {
		flags.Usage()
		return fmt.Errorf("%w: user passwd: --password-file FILE and the ADDRESS are required", errUsage)
	}
	var raw []byte
	if *file == "-" {
		raw, err = io.ReadAll(io.LimitReader(os.Stdin, 4096))
	} else {
		raw, err = os.ReadFile(*file)
	}
	if err != nil {
		return fmt.Errorf("user passwd: %w", err)
	}
	pw, _, _ := strings.Cut(string(bytes.TrimRight(raw, "\r\n")), "\n")
	if len(pw) < 8 {
		return errors.New("user passwd: the password must have at least 8 characters")
	}
	ud, err := identity.UserDir(*dir, pos[0])
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(ud, identity.UserKeyFile)); err != nil {
		return fmt.Errorf("user passwd: no keys for %s in %s (run `epost user new` first): %w", pos[0], *dir, err)
	}
	h, err := hashPassword(pw)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(ud, PasswordFile), []byte(h+"\n"), 0o600); err != nil {
		return fmt.Errorf("user passwd: %w", err)
	}
	fmt.Fprintf(stdout, "Password set for %s\n", pos[0])
	return nil
}
