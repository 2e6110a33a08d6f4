package main

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/epost-mail/epost/internal/identity"
)

// defaultDataDir is where `epost ca` and `epost user` keep keys and
// certificates unless --dir says otherwise.
const defaultDataDir = "./epost-data"

// cmdCA runs `epost ca init` and `epost ca issue-node`.
func cmdCA(args []string, stdout, stderr io.Writer) error {
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "usage: epost ca init [--dir DIR]")
		fmt.Fprintln(w, "       epost ca issue-node [--dir DIR] --name NAME")
		fmt.Fprintln(w, "       epost ca revoke [--dir DIR] (--node NAME | --user ADDRESS)")
		fmt.Fprintln(w, "       epost ca rotate-node [--dir DIR] --name NAME")
		fmt.Fprintln(w, "       epost ca backup [--dir DIR] --out FILE")
		fmt.Fprintln(w, "       epost ca restore [--dir DIR] --backup FILE --code CODE")
	}
	if len(args) == 0 {
		usage(stderr)
		return fmt.Errorf("%w: ca: no subcommand", errUsage)
	}
	switch args[0] {
	case "init":
		return caInit(args[1:], stdout, stderr)
	case "issue-node":
		return caIssueNode(args[1:], stdout, stderr)
	case "revoke":
		return caRevoke(args[1:], stdout, stderr)
	case "backup":
		return caBackup(args[1:], stdout, stderr)
	case "rotate-node":
		return caRotateNode(args[1:], stdout, stderr)
	case "restore":
		return caRestore(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		usage(stdout)
		return nil
	}
	usage(stderr)
	return fmt.Errorf("%w: ca: unknown subcommand %q", errUsage, args[0])
}

// cmdUser runs `epost user new`, `recover`, `passwd` and `rotate-key`.
func cmdUser(args []string, stdout, stderr io.Writer) error {
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "usage: epost user new [--dir DIR] [--scrypt-work-factor N] ADDRESS")
		fmt.Fprintln(w, "       epost user recover [--dir DIR] --backup FILE --code CODE")
		fmt.Fprintln(w, "       epost user recover [--dir DIR] --node NAME --bootstrap ADDR --code CODE ADDRESS")
		fmt.Fprintln(w, "       epost user passwd [--dir DIR] --password-file FILE ADDRESS")
		fmt.Fprintln(w, "       epost user rotate-key [--dir DIR] [--scrypt-work-factor N] ADDRESS")
	}
	if len(args) == 0 {
		usage(stderr)
		return fmt.Errorf("%w: user: no subcommand", errUsage)
	}
	switch args[0] {
	case "new":
		return userNew(args[1:], stdout, stderr)
	case "recover":
		return userRecover(args[1:], stdout, stderr)
	case "passwd":
		return userPasswd(args[1:], stdout, stderr)
	case "rotate-key":
		return userRotateKey(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		usage(stdout)
		return nil
	}
	usage(stderr)
	return fmt.Errorf("%w: user: unknown subcommand %q", errUsage, args[0])
}

// newFlagSet makes a subcommand's flag set writing its messages to stderr.
func newFlagSet(name, args string, stderr io.Writer) *flag.FlagSet {
	flags := flag.NewFlagSet(name, flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprintf(stderr, "usage: epost %s %s\n", name, args)
		flags.PrintDefaults()
	}
	return flags
}

// parseFlags parses args with flags allowed before and after positional
// arguments ("user new alice@x --dir d"), which the flag package alone
// stops at. Everything after "--" is positional.
func parseFlags(flags *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := flags.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %s: %v", errUsage, flags.Name(), err)
		}
		rest := flags.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

func caInit(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("ca init", "[--dir DIR]", stderr)
	dir := flags.String("dir", defaultDataDir, "data directory")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		flags.Usage()
		return fmt.Errorf("%w: ca init: unexpected argument %q", errUsage, pos[0])
	}
	ca, err := identity.NewCA(rand.Reader)
	if err != nil {
		return err
	}
	if err := identity.WriteCA(*dir, ca); err != nil {
		return err
	}
	d := identity.CADir(*dir)
	fmt.Fprintf(stdout, "Created a community CA in %s\n", d)
	fmt.Fprintf(stdout, "fingerprint: %s\n", ca.Fingerprint())
	fmt.Fprintf(stdout, "Give %s to every member. Keep %s secret: whoever holds it can admit anyone.\n",
		filepath.Join(d, identity.CAPublicFile), filepath.Join(d, identity.CAKeyFile))
	return nil
}

func caIssueNode(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("ca issue-node", "[--dir DIR] --name NAME", stderr)
	dir := flags.String("dir", defaultDataDir, "data directory holding the CA")
	name := flags.String("name", "", "node name (letters, digits, . _ -)")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *name == "" {
		flags.Usage()
		return fmt.Errorf("%w: ca issue-node: --name NAME is required, and nothing else", errUsage)
	}
	nd, err := identity.NodeDir(*dir, *name)
	if err != nil {
		return err
	}
	ca, err := identity.ReadCA(*dir)
	if err != nil {
		return err
	}
	key, err := identity.GenerateNodeKey(rand.Reader)
	if err != nil {
		return err
	}
	cert, err := ca.IssueNode(rand.Reader, key.Public())
	if err != nil {
		return err
	}
	if err := identity.WriteNode(*dir, *name, key, cert); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "Issued node %s: key and certificate in %s\n", *name, nd)
	fmt.Fprintln(stdout, cert.NodeID)
	return nil
}

// userArgs parses the flags and the one ADDRESS of `user new` and `user
// rotate-key`: the data directory, the address (canonical) and the scrypt
// work factor of the key backup.
func userArgs(name string, args []string, stderr io.Writer) (dir, addr string, wf int, err error) {
	flags := newFlagSet(name, "[--dir DIR] [--scrypt-work-factor N] ADDRESS", stderr)
	d := flags.String("dir", defaultDataDir, "data directory holding the CA")
	w := flags.Int("scrypt-work-factor", identity.DefaultScryptWorkFactor,
		fmt.Sprintf("log2 of the scrypt cost sealing the key backup (1..%d)", identity.MaxScryptWorkFactor))
	pos, err := parseFlags(flags, args)
	if err != nil {
		return "", "", 0, err
	}
	if len(pos) != 1 {
		flags.Usage()
		return "", "", 0, fmt.Errorf("%w: %s: want one ADDRESS, got %d arguments", errUsage, name, len(pos))
	}
	if addr, err = identity.CanonicalAddress(pos[0]); err != nil {
		return "", "", 0, err
	}
	if *w < 1 || *w > identity.MaxScryptWorkFactor {
		return "", "", 0, fmt.Errorf("%w: %s: --scrypt-work-factor %d outside 1..%d", errUsage, name, *w, identity.MaxScryptWorkFactor)
	}
	return *d, addr, *w, nil
}

// issueUser certifies keys with the CA and seals them under a new
// recovery code: the certificate, the code (which only the caller shows)
// and the key backup, for identity.WriteUser.
func issueUser(ca *identity.CA, keys identity.UserKeys, wf int) (cert *identity.UserCert, code string, backup []byte, err error) {
	if cert, err = ca.IssueUser(rand.Reader, keys.Address, keys.Signing.Public(), keys.Sealing.Recipient()); err != nil {
		return nil, "", nil, err
	}
	if code, err = identity.NewRecoveryCode(rand.Reader); err != nil {
		return nil, "", nil, err
	}
	if backup, err = identity.SealBackup(keys, code, wf); err != nil {
		return nil, "", nil, err
	}
	return cert, code, backup, nil
}

// printRecoveryCode shows a user's new recovery code, once.
func printRecoveryCode(stdout io.Writer, addr, code string) {
	fmt.Fprintf(stdout, "Recovery code for %s:\n\n    %s\n\n", addr, code)
	fmt.Fprintln(stdout, "WRITE THIS CODE DOWN NOW and keep it somewhere safe, off this computer.")
	fmt.Fprintln(stdout, "It is shown only this once and cannot be retrieved later. If this node's")
	fmt.Fprintln(stdout, "disk is lost, the code and `epost user recover` restore your keys and mail;")
	fmt.Fprintln(stdout, "without it they are gone. Anyone with the code can read your mail.")
}

func userNew(args []string, stdout, stderr io.Writer) error {
	dir, addr, wf, err := userArgs("user new", args, stderr)
	if err != nil {
		return err
	}
	ud, err := identity.UserDir(dir, addr)
	if err != nil {
		return err
	}
	// Fail before the slow scrypt if the user exists; WriteUser checks
	// again.
	if _, err := os.Stat(filepath.Join(ud, identity.UserKeyFile)); err == nil {
		return fmt.Errorf("user new %s: %w: %s", addr, identity.ErrExists, filepath.Join(ud, identity.UserKeyFile))
	}
	ca, err := identity.ReadCA(dir)
	if err != nil {
		return err
	}
	keys, err := identity.GenerateUserKeys(rand.Reader, addr)
	if err != nil {
		return err
	}
	cert, code, backup, err := issueUser(ca, keys, wf)
	if err != nil {
		return err
	}
	if err := identity.WriteUser(dir, keys, cert, backup); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Created user %s (user id %s) in %s\n\n", addr, cert.UserID, ud)
	printRecoveryCode(stdout, addr, code)
	return nil
}

// userRotateKey runs `epost user rotate-key`: a new key pair for a user,
// certified by the CA, with the old pairs kept inside the new key file
// (and so in the new backup), since mail and folders sealed to them must
// stay readable. The old certificate is superseded, not revoked: a
// revocation voids everything signed under it, the user's archive
// manifests included, which cannot be signed again.
func userRotateKey(args []string, stdout, stderr io.Writer) error {
	dir, addr, wf, err := userArgs("user rotate-key", args, stderr)
	if err != nil {
		return err
	}
	ca, err := identity.ReadCA(dir)
	if err != nil {
		return err
	}
	v, err := dirVerifier(dir, ca.Public())
	if err != nil {
		return err
	}
	old, oldCert, err := identity.ReadUser(dir, addr, v)
	if err != nil {
		return err
	}
	keys, err := old.Rotate(rand.Reader)
	if err != nil {
		return err
	}
	cert, code, backup, err := issueUser(ca, keys, wf)
	if err != nil {
		return err
	}
	ud, err := identity.UserDir(dir, addr)
	if err != nil {
		return err
	}
	retired := ud + ".retired-" + oldCert.Serial.String()[:8]
	if err := os.Rename(ud, retired); err != nil {
		return fmt.Errorf("user rotate-key: keep the old keys aside: %w", err)
	}
	if err := identity.WriteUser(dir, keys, cert, backup); err != nil {
		return fmt.Errorf("user rotate-key: %w (the old files are in %s)", err, retired)
	}
	// The password is the user's, not the keys': it carries over.
	if pw, err := os.ReadFile(filepath.Join(retired, PasswordFile)); err == nil {
		if err := os.WriteFile(filepath.Join(ud, PasswordFile), pw, 0o600); err != nil {
			return fmt.Errorf("user rotate-key: keep the password: %w", err)
		}
	}
	fmt.Fprintf(stdout, "User %s has new keys (key generation %d); the old files are in %s\n", addr, keys.Generation(), retired)
	fmt.Fprintf(stdout, "Certificate %s supersedes %s, which is not revoked: mail, folders and the\n", cert.Serial.String()[:8], oldCert.Serial.String()[:8])
	fmt.Fprintln(stdout, "archive written under the old keys stay readable; the new key file keeps the old keys.")
	fmt.Fprintf(stdout, "Copy the new users/%s/ to the user's node and restart it; it publishes the new\n", addr)
	fmt.Fprintln(stdout, "certificate and key backup, and writes under the new keys from then on.")
	fmt.Fprintln(stdout)
	printRecoveryCode(stdout, addr, code)
	fmt.Fprintln(stdout, "The old recovery code opens only the old backup, without the new keys.")
	return nil
}

// dirVerifier returns a verifier for the CA ca that holds the newest
// revocation list in the data directory dir.
func dirVerifier(dir string, ca identity.CAPublicKey) (*identity.Verifier, error) {
	v := identity.NewVerifier(ca)
	rev, err := identity.ReadRevocation(dir, v)
	if err != nil {
		return nil, err
	}
	if rev != nil {
		if _, err := v.Adopt(rev.Bytes()); err != nil {
			return nil, err
		}
	}
	return v, nil
}

func userRecover(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("user recover", "[--dir DIR] --code CODE (--backup FILE | --node NAME --bootstrap ADDR ADDRESS)", stderr)
	dir := flags.String("dir", defaultDataDir, "data directory to restore the keys into")
	backupFile := flags.String("backup", "", "sealed key backup (keybackup.age)")
	code := flags.String("code", "", "the recovery code epost user new printed")
	nodeName := flags.String("node", "", "fetch the backup from the network as this node (its certificate is in DIR)")
	bootstrap := flags.String("bootstrap", "", "address of a community node to join through (with --node)")
	listen := flags.String("listen", "/ip4/0.0.0.0/tcp/0", "where the temporary node listens (with --node)")
	timeout := flags.Duration("timeout", 2*time.Minute, "how long to try the network (with --node)")
	fromArchive := flags.Bool("from-archive", false, "first rebuild the user's whole mailbox, key backup included, from the erasure-coded archive (with --node; for when every replica is gone)")
	community := flags.Int("community", 0, "about how many nodes the community has, as in the node configuration (with --from-archive; 0 means 1000)")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	network := *nodeName != "" || *bootstrap != ""
	switch {
	case *code == "":
		flags.Usage()
		return fmt.Errorf("%w: user recover: --code CODE is required", errUsage)
	case network && (*nodeName == "" || *bootstrap == "" || *backupFile != "" || len(pos) != 1):
		flags.Usage()
		return fmt.Errorf("%w: user recover from the network needs --node NAME, --bootstrap ADDR and the ADDRESS, and no --backup", errUsage)
	case *fromArchive && !network:
		flags.Usage()
		return fmt.Errorf("%w: user recover --from-archive reads the network: it needs --node NAME and --bootstrap ADDR", errUsage)
	case !network && (*backupFile == "" || len(pos) != 0):
		flags.Usage()
		return fmt.Errorf("%w: user recover: --backup FILE (or --node and --bootstrap) is required", errUsage)
	}
	var data []byte
	if network {
		fmt.Fprintf(stdout, "Fetching the key backup of %s from the network...\n", pos[0])
		data, err = fetchBackup(recoverOpts{dir: *dir, node: *nodeName, bootstrap: *bootstrap, listen: *listen, address: pos[0],
			timeout: *timeout, fromArchive: *fromArchive, code: *code, community: *community, progress: stdout})
	} else {
		data, err = os.ReadFile(*backupFile)
	}
	if err != nil {
		return fmt.Errorf("user recover: %w", err)
	}
	keys, err := identity.OpenBackup(data, *code)
	if err != nil {
		return err
	}
	if err := identity.WriteUserKeys(*dir, keys); err != nil {
		return err
	}
	ud, err := identity.UserDir(*dir, keys.Address)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Restored the keys of %s to %s\n", keys.Address, filepath.Join(ud, identity.UserKeyFile))
	// Keep the backup next to the keys, so the node can publish it again.
	if err := identity.WriteUserBackup(*dir, keys.Address, data); err != nil && !errors.Is(err, identity.ErrExists) {
		return err
	}
	// If a certificate is already here, make sure it certifies these keys.
	caPub, err := identity.ReadCAPublic(*dir)
	if err != nil {
		return nil // no CA key here: nothing to check against
	}
	if _, _, err := identity.ReadUser(*dir, keys.Address, identity.NewVerifier(caPub)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(stderr, "warning: %v\n", err)
	}
	return nil
}

// caRevoke runs `epost ca revoke`: the next revocation epoch, the previous
// list plus one more node or user certificate, signed by the CA and
// written to DIR/ca/revocation-EPOCH.list.
func caRevoke(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("ca revoke", "[--dir DIR] (--node NAME | --user ADDRESS)", stderr)
	dir := flags.String("dir", defaultDataDir, "data directory holding the CA")
	nodeName := flags.String("node", "", "revoke this node's certificate (DIR/nodes/NAME)")
	user := flags.String("user", "", "revoke this user's certificate (DIR/users/ADDRESS)")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || (*nodeName == "") == (*user == "") {
		flags.Usage()
		return fmt.Errorf("%w: ca revoke: give exactly one of --node NAME and --user ADDRESS", errUsage)
	}
	ca, err := identity.ReadCA(*dir)
	if err != nil {
		return err
	}
	v := identity.NewVerifier(ca.Public()) // no revocation: the certificate is still to be revoked
	var serial identity.Serial
	var what string
	if *nodeName != "" {
		_, cert, err := identity.ReadNode(*dir, *nodeName, v)
		if err != nil {
			return err
		}
		serial, what = cert.Serial, fmt.Sprintf("node %s (%s)", *nodeName, cert.NodeID.Short())
	} else {
		cert, err := identity.ReadUserCert(*dir, *user, v)
		if err != nil {
			return err
		}
		serial, what = cert.Serial, "user "+cert.Address
	}
	return revokeSerial(*dir, ca, serial, what, stdout)
}

// revokeSerial writes the next revocation epoch: the newest list in dir
// plus serial.
func revokeSerial(dir string, ca *identity.CA, serial identity.Serial, what string, stdout io.Writer) error {
	prev, err := identity.ReadRevocation(dir, identity.NewVerifier(ca.Public()))
	if err != nil {
		return err
	}
	var list []identity.Serial
	epoch := uint64(1)
	if prev != nil {
		list, epoch = prev.Revoked(), prev.Epoch+1
		if prev.IsRevoked(serial) {
			fmt.Fprintf(stdout, "%s is already revoked (epoch %d)\n", what, prev.Epoch)
			return nil
		}
	}
	r, err := ca.IssueRevocation(epoch, append(list, serial))
	if err != nil {
		return err
	}
	if err := identity.WriteRevocation(dir, r); err != nil {
		return err
	}
	file := filepath.Join(identity.CADir(dir), fmt.Sprintf("revocation-%08d.list", epoch))
	fmt.Fprintf(stdout, "Revoked %s: revocation epoch %d in %s\n", what, epoch, file)
	fmt.Fprintln(stdout, "Copy it into every member's data directory (DIR/ca/): nodes look there once a minute,")
	fmt.Fprintln(stdout, "then refuse the revoked certificate and pass the list on in each new connection.")
	return nil
}

// caRotateNode runs `epost ca rotate-node`: a new key for a node, certified
// with the same NodeID (its place on the ring and its store stay), the old
// key and certificate kept aside and the old certificate revoked.
func caRotateNode(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("ca rotate-node", "[--dir DIR] --name NAME", stderr)
	dir := flags.String("dir", defaultDataDir, "data directory holding the CA")
	name := flags.String("name", "", "the node whose key to replace")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *name == "" {
		flags.Usage()
		return fmt.Errorf("%w: ca rotate-node: --name NAME is required, and nothing else", errUsage)
	}
	ca, err := identity.ReadCA(*dir)
	if err != nil {
		return err
	}
	_, old, err := identity.ReadNode(*dir, *name, identity.NewVerifier(ca.Public()))
	if err != nil {
		return err
	}
	key, err := identity.GenerateNodeKey(rand.Reader)
	if err != nil {
		return err
	}
	cert, err := ca.ReissueNode(rand.Reader, key.Public(), old.NodeID)
	if err != nil {
		return err
	}
	nd, err := identity.NodeDir(*dir, *name)
	if err != nil {
		return err
	}
	retired := nd + ".retired-" + old.Serial.String()[:8]
	if err := os.Rename(nd, retired); err != nil {
		return fmt.Errorf("ca rotate-node: keep the old key aside: %w", err)
	}
	if err := identity.WriteNode(*dir, *name, key, cert); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Node %s (%s) has a new key; the old one is in %s\n", *name, cert.NodeID.Short(), retired)
	fmt.Fprintln(stdout, "Copy the new nodes/"+*name+"/ to that machine and restart its node; it keeps its store.")
	return revokeSerial(*dir, ca, old.Serial, "the old certificate of node "+*name, stdout)
}

// caBackup runs `epost ca backup`: the CA's private key sealed under a new
// recovery code, printed once, into FILE, to keep apart from the machine
// that holds ca.key (without the CA key no node or user can be added or
// revoked).
func caBackup(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("ca backup", "[--dir DIR] --out FILE", stderr)
	dir := flags.String("dir", defaultDataDir, "data directory holding the CA")
	out := flags.String("out", "", "file to write the sealed CA key to (it must not exist)")
	work := flags.Int("scrypt-work-factor", identity.DefaultScryptWorkFactor, "scrypt work factor (log2); lower only for tests")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *out == "" {
		flags.Usage()
		return fmt.Errorf("%w: ca backup: --out FILE is required, and nothing else", errUsage)
	}
	ca, err := identity.ReadCA(*dir)
	if err != nil {
		return err
	}
	code, err := identity.NewRecoveryCode(rand.Reader)
	if err != nil {
		return err
	}
	sealed, err := identity.SealCABackup(ca, code, *work)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("ca backup: %w", err)
	}
	if _, err := f.Write(sealed); err != nil {
		f.Close()
		return fmt.Errorf("ca backup: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("ca backup: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("ca backup: %w", err)
	}
	fmt.Fprintf(stdout, "Sealed the CA key (%s) into %s.\n", ca.Fingerprint(), *out)
	fmt.Fprintf(stdout, "Its recovery code, shown only now: %s\n", code)
	fmt.Fprintln(stdout, "Keep the file and the code in different places; `epost ca restore` needs both.")
	return nil
}

// caRestore runs `epost ca restore`: the CA key from a backup, into a data
// directory that has none.
func caRestore(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("ca restore", "[--dir DIR] --backup FILE --code CODE", stderr)
	dir := flags.String("dir", defaultDataDir, "data directory to restore the CA into")
	backup := flags.String("backup", "", "the file epost ca backup wrote")
	code := flags.String("code", "", "its recovery code")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *backup == "" || *code == "" {
		flags.Usage()
		return fmt.Errorf("%w: ca restore: --backup FILE and --code CODE are required", errUsage)
	}
	data, err := os.ReadFile(*backup)
	if err != nil {
		return fmt.Errorf("ca restore: %w", err)
	}
	ca, err := identity.OpenCABackup(data, *code)
	if err != nil {
		return err
	}
	if pub, err := identity.ReadCAPublic(*dir); err == nil && pub.Fingerprint() != ca.Fingerprint() {
		return fmt.Errorf("ca restore: %w: %s holds CA %s, the backup is of %s", identity.ErrWrongCA, *dir, pub.Fingerprint(), ca.Fingerprint())
	}
	if err := identity.RestoreCA(*dir, ca); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Restored the CA key (%s) to %s\n", ca.Fingerprint(), identity.CADir(*dir))
	return nil
}
