package transport

import (
	"runtime"
	"testing"
	"time"
)

// The overlay sends many small messages (hops, acks, heartbeats, probes:
// 100-300 bytes). These benchmarks compare the design used, a long-lived
// stream per destination with batched flushes, against opening a stream
// per message (each with its own hello, which the receiver must verify).

const benchMsgSize = 200

func BenchmarkSendLongLivedStream(b *testing.B) {
	r := &seq{}
	ca := newCA(b, r)
	a := newNode(b, ca, newMember(b, ca, r))
	c := newNode(b, ca, newMember(b, ca, r))
	msg := make([]byte, benchMsgSize)
	a.Send(c.Addr(), msg) // connect outside the timing
	waitFor(b, "warm-up", 10*time.Second, func() bool { return c.in.len() == 1 })
	b.ResetTimer()
	for i := range b.N {
		a.Send(c.Addr(), msg)
		// Stay below the queue bound: best effort would drop the excess.
		for uint64(i) > a.Stats().MsgsSent+uint64(a.tune.QueueLen/2) {
			runtime.Gosched()
		}
	}
	waitFor(b, "delivery", time.Minute, func() bool { return c.in.len() == b.N+1 })
}

func BenchmarkSendStreamPerMessage(b *testing.B) {
	r := &seq{}
	ca := newCA(b, r)
	c := newNode(b, ca, newMember(b, ca, r))
	m := newMember(b, ca, r)
	p := newRawPeer(b, m.key)
	hello := helloFor(b, m.cert, p.addr())
	msg := make([]byte, benchMsgSize)
	b.ResetTimer()
	for range b.N {
		s := p.open(b, c.Addr())
		if _, err := s.Write(frames(hello, msg)); err != nil {
			b.Fatal(err)
		}
		_ = s.CloseWrite()
		var ack [1]byte
		_, _ = s.Read(ack[:])
		_ = s.Close()
	}
	waitFor(b, "delivery", time.Minute, func() bool { return c.in.len() == b.N })
}
