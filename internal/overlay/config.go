package overlay

import "github.com/epost-mail/epost/internal/env"

// Config holds the overlay's parameters. Durations are virtual ticks.
type Config struct {
	// LeafSetSize is L, the number of leaf-set members (half on each side).
	LeafSetSize int
	// HeartbeatPeriod is how often a node tells its left neighbour it is
	// alive, unless other traffic to it already did (suppression).
	HeartbeatPeriod env.Duration
	// SuspectAfter is how long a node waits without hearing from its right
	// neighbour before probing it.
	SuspectAfter env.Duration
	// ProbeAttempts is how many unanswered probes declare a node dead.
	ProbeAttempts int
	// DefaultTimeout is the probe and per-hop timeout towards a node whose
	// round-trip time is not yet measured.
	DefaultTimeout env.Duration
	// MinTimeout and MaxTimeout clamp the timeouts derived from measured
	// round-trip times: 1.5 srtt + 4 rttvar, TCP's srtt + 4 rttvar with a
	// margin for stable links, where rttvar decays to nothing.
	MinTimeout, MaxTimeout env.Duration
	// TableProbePeriod is how often each routing-table entry is checked,
	// unless traffic from it already showed it alive.
	TableProbePeriod env.Duration
	// LeafExchangePeriod is how often a node asks a random leaf-set member
	// for its leaf set.
	LeafExchangePeriod env.Duration
	// RowExchangePeriod is how often a node asks a routing-table entry for
	// its row, to fill holes and find nearer entries.
	RowExchangePeriod env.Duration
	// EndToEndTimeout is how long a source waits for the root's
	// confirmation of an application message before sending it again;
	// zero turns end-to-end confirmation off. EndToEndTries bounds the
	// sends in all.
	EndToEndTimeout env.Duration
	EndToEndTries   int
	// MaxReroutes bounds how often one hop re-routes a message around
	// silent next hops before giving up.
	MaxReroutes int
	// JoinTimeout restarts a join that has not completed.
	JoinTimeout env.Duration
	// HoldTimeout bounds how long a message waits at a node that is not yet
	// allowed to deliver it (joining, or a closer node being confirmed).
	HoldTimeout env.Duration
	// DeadMemory is how long a node declared dead is remembered as a
	// candidate for partition reintegration.
	DeadMemory env.Duration
	// HearsayMemory is how long a node declared dead is ignored when
	// others mention it second-hand (their leaf sets lag behind).
	HearsayMemory env.Duration
	// DeadMemoryCount bounds how many remembered dead nodes are candidates
	// for partition reintegration (the most recent ones).
	DeadMemoryCount int
	// ReintegratePeriod is how often a node tries a remembered dead node,
	// a routing-table entry or a bootstrap, to find and merge the other side
	// of a partition.
	ReintegratePeriod env.Duration
	// StallLimit: a heartbeat tick later than HeartbeatPeriod + StallLimit
	// means this node's loop stalled (others may have declared it dead), so
	// it rejoins.
	StallLimit env.Duration
	// WallJumpLimit: a wall clock that moved this much more or less than the
	// monotonic clock between ticks means the machine slept; rejoin.
	WallJumpLimit env.Duration
	// IndirectHelpers is how many leaf-set members are asked to probe a
	// node that does not answer us before it is declared dead (0 turns
	// indirect routes off).
	IndirectHelpers int
	// SearchTimeout bounds the wait for the helpers' answers; towards a
	// slow node the wait grows with its measured round-trip time.
	SearchTimeout env.Duration
	// HelpFresh: a helper that heard from the target this recently answers
	// at once, without probing.
	HelpFresh env.Duration
	// LinkRecheck is how often a link found broken is tried directly
	// again; it may have healed while relayed traffic kept flowing.
	LinkRecheck env.Duration
	// RecentDeath is how long a node passes on, with its probes, the deaths
	// it declared.
	RecentDeath env.Duration
	// MaxHops drops a message that has travelled this many hops: only
	// inconsistent state during repair makes a route loop.
	MaxHops int
}

// DefaultConfig holds ePOST's deployed values and MSPastry's periods.
func DefaultConfig() Config {
	return Config{
		LeafSetSize:       24,              // ePOST: 12 on each side
		HeartbeatPeriod:   30 * env.Second, // MSPastry's Tls
		SuspectAfter:      40 * env.Second, // one period plus slack for latency
		ProbeAttempts:     3,               // one loss must not kill a node
		DefaultTimeout:    1 * env.Second,  // above any sane wide-area RTT
		MinTimeout:        100 * env.Millisecond,
		MaxTimeout:        5 * env.Second,
		TableProbePeriod:  15 * env.Minute, // ePOST's routing-table maintenance
		RowExchangePeriod: 15 * env.Minute,
		// Rare: heartbeats already carry leaf sets one way.
		LeafExchangePeriod: 10 * env.Minute,
		MaxReroutes:        8,
		EndToEndTimeout:    3 * env.Second,
		EndToEndTries:      3,
		JoinTimeout:        10 * env.Second,
		HoldTimeout:        10 * env.Second,
		DeadMemory:         90 * env.Minute, // ePOST remembered the dead for 90 min
		RecentDeath:        2 * env.Minute,  // a few heartbeat periods: long enough to reach refills
		MaxHops:            40,
		HearsayMemory:      10 * env.Minute, // stale leaf sets catch up by then; fresh join replies bypass it
		DeadMemoryCount:    20,              // ePOST
		ReintegratePeriod:  5 * env.Minute,  // ePOST
		StallLimit:         40 * env.Second, // about when neighbours start to declare us dead
		WallJumpLimit:      60 * env.Second,
		IndirectHelpers:    8, // ePOST: up to 8 one-hop detours
		SearchTimeout:      3000 * env.Millisecond,
		HelpFresh:          5 * env.Second,
		LinkRecheck:        30 * env.Second,
	}
}

// SimConfig is DefaultConfig: the simulator runs the deployed values.
func SimConfig() Config { return DefaultConfig() }
