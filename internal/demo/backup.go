package demo

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/node"
)

// account is a demo user's keys and node.
type account struct {
	keys identity.UserKeys
	node *node.Node
}

// RecoveryCodeFile is where, in a demo with a directory, each user's
// recovery code is kept beside the sealed key backup (a real community
// prints it once and keeps no copy).
const RecoveryCodeFile = "recovery-code"

// SealBackups seals each user's keys under a new recovery code with the
// given scrypt work factor and publishes the backup in the network, as
// `epost node` does for its users. With the full cost this takes a second
// or more per user and mail does not need it, so the demo does it after
// "ready". With a directory the backup and the code are kept in the
// user's directory, and users that have them already are skipped. It
// stops at ctx's end and returns how many backups it published.
func (c *Community) SealBackups(ctx context.Context, workFactor int) (int, error) {
	c.mu.Lock()
	accs := append([]account(nil), c.accounts...)
	c.mu.Unlock()
	sealed := 0
	for _, a := range accs {
		if ctx.Err() != nil {
			return sealed, ctx.Err()
		}
		var ud string
		if !c.ownDir {
			var err error
			if ud, err = identity.UserDir(c.dir, a.keys.Address); err != nil {
				return sealed, err
			}
			if _, err := os.Stat(filepath.Join(ud, identity.UserBackupFile)); err == nil {
				continue // sealed and published by an earlier run
			}
		}
		code, err := identity.NewRecoveryCode(rand.Reader)
		if err != nil {
			return sealed, err
		}
		backup, err := identity.SealBackup(a.keys, code, workFactor)
		if err != nil {
			return sealed, err
		}
		done := make(chan error, 1)
		nd := a.node
		if err := nd.Do(func() {
			acc := nd.Mail().User(a.keys.Address)
			if acc == nil {
				done <- fmt.Errorf("demo: %s is not served", a.keys.Address)
				return
			}
			acc.PublishKeyBackup(backup, func(err error) { done <- err })
		}); err != nil {
			return sealed, err
		}
		select {
		case err = <-done:
		case <-ctx.Done():
			return sealed, ctx.Err()
		}
		if err != nil {
			return sealed, fmt.Errorf("demo: publish the key backup of %s: %w", a.keys.Address, err)
		}
		if ud != "" {
			if err := identity.WriteUserBackup(c.dir, a.keys.Address, backup); err != nil && !errors.Is(err, identity.ErrExists) {
				return sealed, err
			}
			if err := os.WriteFile(filepath.Join(ud, RecoveryCodeFile), []byte(code+"\n"), 0o600); err != nil {
				return sealed, err
			}
		}
		sealed++
	}
	return sealed, nil
}
