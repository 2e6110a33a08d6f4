package store

// EventType says what an Event reports. Append-only.
type EventType uint8

// Event types, in the order they happen to one write.
const (
	// EventSubmitted: a write was accepted into the queue. Write is its
	// sequence number, Entry the object it writes (zero for writes that
	// are not object puts or lease extensions).
	EventSubmitted EventType = 1
	// EventSyncStarted: the committer is about to commit transaction
	// Batch, which carries writes Writes: bbolt writes the dirty pages,
	// fsyncs the file, writes the meta page and fsyncs again.
	EventSyncStarted EventType = 2
	// EventSyncDone: the commit of transaction Batch returned, with Err.
	// With Err == nil every write it carries is on stable storage.
	EventSyncDone EventType = 3
	// EventCompleted: write Write's completion is about to be called with
	// Err. A nil Err is reported only after EventSyncDone (Err == nil) for
	// a transaction that carries the write. Every transaction is synced,
	// even one whose writes changed nothing, so this holds for all writes.
	EventCompleted EventType = 4
)

// Event is one step in a write's life, reported to Config.Observer.
type Event struct {
	Type   EventType // what happened
	Write  uint64    // EventSubmitted, EventCompleted
	Entry  Entry     // EventSubmitted
	Batch  uint64    // EventSyncStarted, EventSyncDone
	Writes []uint64  // EventSyncStarted
	Err    error     // EventSyncDone, EventCompleted
}

// Observer receives Events. EventSubmitted is reported on the submitting
// goroutine before the write can reach the committer; the others on the
// committer goroutine, in order. Implementations must be fast, safe for
// concurrent use, and must not call the Store.
type Observer interface {
	Observe(Event)
}
