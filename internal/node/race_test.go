//go:build race

package node

// raceEnabled: the race detector is on. Its runtime stalls every goroutine
// now and then for 100-500 ms (measured here), so tests widen the
// overlay's timeouts to keep those stalls from looking like failures.
const raceEnabled = true
