package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/glacier"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/node"
)

// recoverOpts says how `user recover` reaches the network.
type recoverOpts struct {
	dir, node, bootstrap, listen, address string
	timeout                               time.Duration
	// fromArchive first restores the user's mailbox (key backup included)
	// into PAST from the archive, for when every replica of it is gone.
	fromArchive bool
	// code opens the key backup found in the archive, so that the root
	// record found there can say how far the chain reaches at least.
	code      string
	community int
	progress  io.Writer
}

// fetchBackup joins the community as the node called name in dir, on a
// scratch disk, and reads the user's sealed key backup from the network.
// The backup is signed by the user and checked against the community CA
// before it is returned.
func fetchBackup(o recoverOpts) ([]byte, error) {
	dir, name, bootstrap, listen, address, timeout := o.dir, o.node, o.bootstrap, o.listen, o.address, o.timeout
	caPub, err := identity.ReadCAPublic(dir)
	if err != nil {
		return nil, err
	}
	key, cert, err := identity.ReadNode(dir, name, identity.NewVerifier(caPub))
	if err != nil {
		return nil, err
	}
	scratch, err := os.MkdirTemp("", "epost-recover-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	cfg := node.DefaultConfig()
	cfg.ListenAddrs = []string{listen}
	cfg.Key, cfg.Cert, cfg.CA = key, cert, caPub
	cfg.Bootstrap = []env.Addr{env.Addr(bootstrap)}
	cfg.DataDir = scratch
	cfg.Community = o.community
	cfg.Log = env.Discard
	n, err := node.New(cfg)
	if err != nil {
		return nil, err
	}
	defer n.Close()
	if err := n.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for !n.Active() {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("could not join the community through %s within %v", bootstrap, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if o.fromArchive {
		addr, err := identity.CanonicalAddress(address)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(o.progress, "Restoring the mailbox of %s from the archive...\n", addr)
		type outcome struct {
			n   int
			err error
		}
		ch := make(chan outcome, 1)
		if err := n.Do(func() {
			openKeys := func(b []byte) (identity.UserKeys, error) { return identity.OpenBackup(b, o.code) }
			n.RecoverArchiveWith(id.ForUser(addr), openKeys, func(bundles, objects int) {
				fmt.Fprintf(o.progress, "\r%d bundles, %d objects read from the archive", bundles, objects)
			}, func(k int, err error) { ch <- outcome{k, err} })
		}); err != nil {
			return nil, err
		}
		r := <-ch
		switch {
		case errors.Is(r.err, glacier.ErrLost):
			// Everything else is restored: go on, and say what is missing.
			fmt.Fprintf(o.progress, "\nRestored %d objects from the archive; WARNING: %v\n", r.n, r.err)
		case r.err != nil:
			return nil, fmt.Errorf("restore from the archive: %w", r.err)
		default:
			fmt.Fprintf(o.progress, "\nRestored %d objects from the archive.\n", r.n)
		}
	}
	// Right after joining, the leaf set may still be filling: retry.
	var last error
	for time.Now().Before(deadline) {
		ch := make(chan struct {
			b   []byte
			err error
		}, 1)
		if err := n.Do(func() {
			n.Mail().FetchKeyBackup(address, func(b []byte, err error) {
				ch <- struct {
					b   []byte
					err error
				}{b, err}
			})
		}); err != nil {
			return nil, err
		}
		r := <-ch
		if r.err == nil {
			return r.b, nil
		}
		last = r.err
		time.Sleep(time.Second)
	}
	return nil, errors.Join(fmt.Errorf("no key backup of %s found within %v", address, timeout), last)
}
