package node

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/post"
)

// TestRestartedNodeServesItsMailboxFromDisk: a node restarted while every
// other node is down serves its user's mailbox at once from its store
// (its heads, root record and folder cache), not after the network
// answers; when the others are back, it writes again.
func TestRestartedNodeServesItsMailboxFromDisk(t *testing.T) {
	r := newStorageRing(t, 4)
	waitFor(t, "ring settled", 60*time.Second, r.settled)
	const ann = "ann@cache.epost"
	keys, cert := r.addUser(t, r.nodes[1], &seq{n: 7000}, ann)
	appendMsg := func(nd *Node, msg string) error {
		return await(t, nd, func(done func(error)) {
			f, _ := nd.Mail().User(ann).Folder("INBOX")
			f.Append([]byte(msg), nil, 0, func(_ uint32, err error) { done(err) })
		})
	}
	for i := range 3 {
		if err := appendMsg(r.nodes[1], fmt.Sprintf("Subject: m%d\r\n\r\nbody\r\n", i)); err != nil {
			t.Fatal(err)
		}
	}
	describe := func(nd *Node) (s string) {
		nd.Do(func() {
			a := nd.Mail().User(ann)
			for _, name := range a.Folders() {
				f, _ := a.Folder(name)
				s += fmt.Sprintf("%s:%d:", name, f.UIDNext())
				for _, m := range f.Messages() {
					s += fmt.Sprintf(" %d/%x", m.UID, m.ID[:4])
				}
				s += "\n"
			}
		})
		return s
	}
	want := describe(r.nodes[1])

	// Every node stops; node 1 comes back alone, told to join through
	// addresses where nobody answers.
	var dead []env.Addr
	for i := range r.nodes {
		dead = append(dead, r.nodes[i].Addr())
		r.stop(i)
	}
	c := r.cfgs[1]
	c.Bootstrap = dead
	nd, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := nd.Start(); err != nil {
		t.Fatal(err)
	}
	r.nodes[1] = nd
	// Well within the first join attempt and any lookup's timeout.
	if err := nd.AddUser(keys, cert, 2*time.Second); err != nil {
		t.Fatalf("the mailbox is not served from disk without the network: %v", err)
	}
	if got := describe(nd); got != want {
		t.Fatalf("served from disk:\n got %s\nwant %s", got, want)
	}
	var st post.Stats
	nd.Do(func() { st = nd.Mail().Stats() })
	if st.CachedLoads == 0 {
		t.Fatal("no folder was opened from the cache")
	}

	// The others come back, node 0 where node 1 looks for it; writes
	// work again.
	c0 := r.cfgs[0]
	c0.ListenAddrs = []string{strings.Split(string(dead[0]), "/p2p/")[0]}
	n0, err := New(c0)
	if err != nil {
		t.Fatal(err)
	}
	if err := n0.Start(); err != nil {
		t.Fatal(err)
	}
	r.nodes[0] = n0
	for _, i := range []int{2, 3} {
		r.start(i)
	}
	waitFor(t, "ring settled again", 90*time.Second, r.settled)
	if err := appendMsg(nd, "Subject: after\r\n\r\nbody\r\n"); err != nil {
		t.Fatalf("append once the network is back: %v", err)
	}
	if n := inboxSize(nd, ann); n != 4 {
		t.Fatalf("INBOX holds %d messages, want 4", n)
	}
}
