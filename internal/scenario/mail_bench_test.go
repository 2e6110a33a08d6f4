package scenario

import (
	"fmt"
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/post"
	"github.com/epost-mail/epost/internal/sim"
)

func benchMail(b *testing.B, n, u int) *Mail {
	sc := sim.DefaultConfig(1)
	sc.InvariantEvery = 0
	m, err := NewMail(sc, overlay.SimConfig(), testPastConfig(), testPostConfig())
	if err != nil {
		b.Fatal(err)
	}
	hosts, err := m.BuildStorage(n, 200*env.Millisecond, 2*env.Minute, nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < u; i++ {
		if _, err := m.AddUser(fmt.Sprintf("u%d@bench.epost", i), hosts[i]); err != nil {
			b.Fatal(err)
		}
	}
	if err := m.S.RunFor(5 * env.Minute); err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkSend measures one send (encrypt, insert the body, seal and
// add a notification for two recipients) through to its acknowledgement.
// The deliveries of earlier sends run meanwhile, so the counts are per
// message over its whole life: send, two INBOX appends (entry and head)
// and two releases. Every replica write is durable before it is
// acknowledged; a real store's group commit lets concurrent writes share
// one sync.
func BenchmarkSend(b *testing.B) {
	m := benchMail(b, 20, 3)
	body := make([]byte, 8<<10)
	before := m.TotalPastStats().Stored
	inserts := m.TotalPastStats().Inserts
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		body[0], body[1], body[2] = byte(i), byte(i>>8), byte(i>>16)
		done := false
		var err error
		m.Post(m.Users[0].Host).Send(m.Users[0].Address, []string{m.Users[1].Address, m.Users[2].Address}, body, func(e error) { err, done = e, true })
		if _, e := m.S.RunWhile(func() bool { return !done }, m.S.Now().Add(env.Minute)); e != nil || err != nil || !done {
			b.Fatalf("send %d: %v %v", i, err, e)
		}
	}
	b.StopTimer()
	st := m.TotalPastStats()
	b.ReportMetric(float64(st.Stored-before)/float64(b.N), "replica-writes/msg")
	b.ReportMetric(float64(st.Inserts-inserts)/float64(b.N), "inserts/msg")
}

// BenchmarkOpenFolder10k measures opening a folder of 10,000 messages on
// a node that has never seen it: head, log back to the last snapshot,
// replay.
func BenchmarkOpenFolder10k(b *testing.B) {
	m := benchMail(b, 20, 1)
	a := m.Account(0)
	inbox, _ := a.Folder("INBOX")
	ref := post.BodyRef{Size: 1000}
	// Arrivals in batches of 50, each batch one log entry.
	for batch := 0; batch < 200; batch++ {
		left := 50
		for i := 0; i < 50; i++ {
			inbox.AppendStored(ref, nil, 0, func(_ uint32, err error) {
				if err != nil {
					b.Fatal(err)
				}
				left--
			})
		}
		if _, err := m.S.RunWhile(func() bool { return left > 0 }, m.S.Now().Add(env.Minute)); err != nil || left > 0 {
			b.Fatalf("batch %d: %d left, %v", batch, left, err)
		}
	}
	if n := len(inbox.Messages()); n != 10000 {
		b.Fatalf("%d messages", n)
	}
	u := m.Users[0]
	var virtual env.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := m.S.Now()
		// A node that never served the user: empty local state.
		h := sim.HostID(10 + i%10)
		x := m.Post(h)
		fresh := post.New(m.PostCfg, x.Env(), m.Past(h), post.Node{Key: m.keys[h], Cert: m.certs[h], Verifier: m.Verifier}, memMeta{})
		ready := false
		acct, err := fresh.AddUser(u.Keys, u.Cert, func(err error) {
			if err != nil {
				b.Fatal(err)
			}
			ready = true
		})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.S.RunWhile(func() bool { return !ready }, m.S.Now().Add(5*env.Minute)); err != nil || !ready {
			b.Fatalf("open %d: %v", i, err)
		}
		virtual += m.S.Now().Sub(start)
		f, _ := acct.Folder("INBOX")
		if len(f.Messages()) != 10000 {
			b.Fatalf("opened %d messages", len(f.Messages()))
		}
	}
	b.ReportMetric(float64(virtual)/float64(env.Millisecond)/float64(b.N), "virtual-ms/open")
}
