package store

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// BenchmarkDurablePut measures durable inserts per second: 8 concurrent
// writers each call Put (which returns only after the covering fsync) on
// new immutable objects, with group commit (the default 100µs window, and
// none) and without (one fsync per write). It also reports the average
// writes per synced transaction.
//
//	go test -run='^$' -bench=DurablePut -benchtime=3s ./internal/store/
func BenchmarkDurablePut(b *testing.B) {
	const writers = 8
	modes := []struct {
		name  string
		tweak func(*Config)
	}{
		{"group", func(*Config) {}}, // DefaultConfig: 100µs window
		{"group-nowindow", func(c *Config) { c.GroupCommitWindow = 0 }},
		{"no-group", func(c *Config) { c.MaxBatch = 1 }},
	}
	for _, size := range []int{4 << 10, 10 << 10} {
		for _, m := range modes {
			b.Run(fmt.Sprintf("%s/%dKiB", m.name, size>>10), func(b *testing.B) {
				cfg := DefaultConfig()
				m.tweak(&cfg)
				s, _ := openTemp(b, cfg)
				var next atomic.Uint64
				var wg sync.WaitGroup
				b.SetBytes(int64(size))
				b.ResetTimer()
				for w := range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						d := payload(uint64(w), size)
						for {
							i := next.Add(1)
							if i > uint64(b.N) {
								return
							}
							binary.BigEndian.PutUint64(d, i) // a new object each time
							if err := s.Put(KindImmutable, ImmutableKey(d), d, Forever); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				st := s.Stats()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
				if st.Batches > 0 {
					b.ReportMetric(float64(st.Writes)/float64(st.Batches), "writes/sync")
				}
			})
		}
	}
}

// BenchmarkGet measures verified reads of 10 KiB immutable objects.
func BenchmarkGet(b *testing.B) {
	s, _ := openTemp(b, DefaultConfig())
	var keys []Key
	for i := range 1000 {
		d := payload(uint64(i), 10<<10)
		keys = append(keys, ImmutableKey(d))
		s.PutAsync(KindImmutable, ImmutableKey(d), d, Forever, nil)
	}
	if err := s.Flush(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(10 << 10)
	for i := 0; b.Loop(); i++ {
		if _, err := s.Get(KindImmutable, keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
	}
}
