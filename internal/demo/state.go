package demo

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/epost-mail/epost/internal/identity"
)

// A demo with a directory keeps its community there: the CA, node and
// user keys and certificates (in the layout `epost ca` and `epost user`
// use), the nodes' stores, and state.json with the nodes' libp2p
// addresses and the users' passwords and ports, so a second run with the
// same directory comes back with the same users, mail and ports.

const stateFile = "state.json"

type savedState struct {
	Nodes []string `json:"nodes"` // libp2p listen addresses (without /p2p/)
	Users []User   `json:"users"`
}

// loadState reads a previous run's state; ok is false on a fresh
// directory.
func loadState(dir string) (st savedState, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return savedState{}, false, nil
	}
	if err != nil {
		return savedState{}, false, err
	}
	if st, err = parseState(b); err != nil {
		return savedState{}, false, err
	}
	return st, true, nil
}

// parseState decodes state.json.
func parseState(b []byte) (st savedState, err error) {
	if err := json.Unmarshal(b, &st); err != nil {
		return savedState{}, fmt.Errorf("demo: %s: %w", stateFile, err)
	}
	return st, nil
}

// saveState records the nodes' addresses and the users.
func (c *Community) saveState() error {
	if c.ownDir {
		return nil
	}
	st := savedState{Users: c.Users()}
	for _, nd := range c.Nodes() {
		a := string(nd.Addr())
		if i := strings.Index(a, "/p2p/"); i >= 0 {
			a = a[:i]
		}
		st.Nodes = append(st.Nodes, a)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.dir, stateFile), append(b, '\n'), 0o600)
}

// nodeName is node i's name in the directory.
func nodeName(i int) string { return fmt.Sprintf("node-%d", i+1) }

// userFiles reads user addr's keys and certificate, or writes new ones.
func (c *Community) userFiles(addr string, make func() (identity.UserKeys, *identity.UserCert, error)) (identity.UserKeys, *identity.UserCert, error) {
	if c.ownDir {
		return make()
	}
	v := identity.NewVerifier(c.ca.Public())
	if keys, cert, err := identity.ReadUser(c.dir, addr, v); err == nil {
		return keys, cert, nil
	}
	keys, cert, err := make()
	if err != nil {
		return keys, cert, err
	}
	if err := identity.WriteUserKeys(c.dir, keys); err != nil {
		return keys, cert, err
	}
	ud, err := identity.UserDir(c.dir, keys.Address)
	if err != nil {
		return keys, cert, err
	}
	return keys, cert, os.WriteFile(filepath.Join(ud, identity.UserCertFile), cert.Bytes(), 0o644)
}

// nodeFiles reads node i's key and certificate, or makes and writes new
// ones.
func (c *Community) nodeFiles(i int) (identity.NodeKey, *identity.NodeCert, error) {
	if !c.ownDir {
		if key, cert, err := identity.ReadNode(c.dir, nodeName(i), identity.NewVerifier(c.ca.Public())); err == nil {
			return key, cert, nil
		}
	}
	key, err := identity.GenerateNodeKey(rand.Reader)
	if err != nil {
		return identity.NodeKey{}, nil, err
	}
	cert, err := c.ca.IssueNode(rand.Reader, key.Public())
	if err != nil {
		return identity.NodeKey{}, nil, err
	}
	if !c.ownDir {
		if err := identity.WriteNode(c.dir, nodeName(i), key, cert); err != nil {
			return identity.NodeKey{}, nil, err
		}
	}
	return key, cert, nil
}
