package node

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/store"
)

// syncCounter counts a store's commits (each one fsync pair) and the
// writes they carried.
type syncCounter struct{ syncs, writes atomic.Int64 }

func (c *syncCounter) Observe(e store.Event) {
	switch e.Type {
	case store.EventSyncDone:
		c.syncs.Add(1)
	case store.EventCompleted:
		if e.Err == nil {
			c.writes.Add(1)
		}
	}
}

// BenchmarkSendOnRealNodes sends messages between two users on 4 real
// nodes with on-disk stores, one at a time (each waits for its
// acknowledgement), and counts replica writes and fsyncs per message over
// its life: the send, the INBOX append (entry and head) and the release.
func BenchmarkSendOnRealNodes(b *testing.B) {
	src := &seq{n: 5000}
	ca, err := identity.NewCA(src)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	counter := &syncCounter{}
	var nodes []*Node
	for i := 0; i < 4; i++ {
		key, _ := identity.GenerateNodeKey(src)
		cert, err := ca.IssueNode(src, key.Public())
		if err != nil {
			b.Fatal(err)
		}
		cfg := Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Key: key, Cert: cert, CA: ca.Public(),
			Overlay: testOverlayConfig(8), Log: testLog(), DataDir: filepath.Join(dir, fmt.Sprint(i))}
		cfg.Store = store.DefaultConfig()
		cfg.Store.Observer = counter
		if i > 0 {
			cfg.Bootstrap = append(cfg.Bootstrap, nodes[0].Addr())
		}
		n, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer n.Close()
		if err := n.Start(); err != nil {
			b.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	settled := func() bool {
		for _, n := range nodes {
			ok := false
			if n.Do(func() { ok = n.ov.Active() && n.ov.Leaf().Len() == 3 }) != nil || !ok {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(time.Minute); !settled(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("ring did not settle")
		}
	}
	var users []string
	for i, addr := range []string{"a@bench.epost", "b@bench.epost"} {
		keys, _ := identity.GenerateUserKeys(src, addr)
		cert, err := ca.IssueUser(src, addr, keys.Signing.Public(), keys.Sealing.Recipient())
		if err != nil {
			b.Fatal(err)
		}
		ready := make(chan error, 1)
		n := nodes[i+1]
		if err := n.Do(func() { _, err = n.Mail().AddUser(keys, cert, func(e error) { ready <- e }) }); err != nil {
			b.Fatal(err)
		}
		if err := <-ready; err != nil {
			b.Fatal(err)
		}
		users = append(users, addr)
	}
	inboxLen := func() int {
		k := 0
		nodes[2].Do(func() {
			if f, ok := nodes[2].Mail().User(users[1]).Folder("INBOX"); ok {
				k = len(f.Messages())
			}
		})
		return k
	}
	body := make([]byte, 8<<10)
	s0, w0 := counter.syncs.Load(), counter.writes.Load()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		body[0], body[1], body[2] = byte(i), byte(i>>8), byte(i>>16)
		done := make(chan error, 1)
		sender := nodes[1]
		if err := sender.Do(func() { sender.Mail().Send(users[0], []string{users[1]}, body, func(e error) { done <- e }) }); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// Count the deliveries' writes too: wait until every message is in
	// the INBOX and its notification released.
	released := func() uint64 {
		var r uint64
		nodes[2].Do(func() { r = nodes[2].Mail().Stats().Released })
		return r
	}
	for deadline := time.Now().Add(2 * time.Minute); inboxLen() < b.N || released() < uint64(b.N); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d delivered, %d released", inboxLen(), b.N, released())
		}
	}
	b.ReportMetric(float64(counter.writes.Load()-w0)/float64(b.N), "replica-writes/msg")
	b.ReportMetric(float64(counter.syncs.Load()-s0)/float64(b.N), "syncs/msg")
}
