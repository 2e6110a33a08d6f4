//go:build !race

package node

// raceEnabled: the race detector is on (see race_test.go).
const raceEnabled = false
