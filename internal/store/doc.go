// Package store is a node's local disk: objects, their leases, the node's
// persisted uptime counter and small metadata, in one bbolt file
// (go.etcd.io/bbolt). PAST keeps its replicas here (DESIGN.md section 5);
// it reaches the store through a small interface of its own, so the API is
// plain methods whose only callbacks are write completions.
//
// # Layout
//
// Top-level buckets, one per concern and one per object kind, so that a
// new kind (Glacier's erasure-coded fragments) is a new bucket and nothing
// else moves:
//
//	store           internal records, CBOR (internal/wire):
//	                  format  layout version (1); Open refuses newer
//	                  ticks   the uptime counter (Ticks, SetTicks)
//	                  stats   objects and bytes per kind, corrupt and
//	                          expired counts; rewritten in every
//	                          transaction that changes them, so exact
//	obj/immutable   key -> object record        (Kind 1)
//	obj/mutable     key -> object record        (Kind 2)
//	obj/set         key -> object record        (Kind 3)
//	obj/fragment    key -> object record        (Kind 4, Glacier)
//	lease           kind || key -> lease record (CBOR: expiry tick, size)
//	expiry          expiry (8 bytes, big-endian) || kind || key -> empty
//	meta            name -> object record of a metadata value
//
// An object record is a fixed header followed by the object's bytes:
// version (1), kind, SHA-256 of the bytes (32), bytes. Keys are 32 bytes;
// their first 16 are the ring position, and bytewise key order is ring
// order, so a ring range is one or two cursor scans (Keys).
//
// # Invariants
//
//   - Every object has exactly one lease record and one expiry index entry,
//     written in the same transaction; size accounting changes in that
//     transaction too. A lease is an expiry on the store's own persisted
//     tick counter, which only moves forward (SetTicks); no wall time is
//     involved, so a node whose clock is years off behaves the same.
//   - Nothing is trusted on read. Get verifies an immutable object's bytes
//     against its key (SHA-256) and a mutable object's against its stored
//     checksum, every time; Lease decodes the lease record; Scrub checks
//     both, entry by entry. An entry that fails is treated as lost: it is
//     removed (after re-checking inside the write transaction), counted in
//     Stats.Corrupt, and reported as not found with an error matching both
//     ErrNotFound and ErrCorrupt, so replica maintenance fetches it again.
//     Has, Keys and Sweep do not read object bytes.
//   - Limits hold on every write: objects and metadata values of more than
//     Config.MaxObjectSize bytes are refused with ErrTooLarge; an
//     immutable object whose bytes do not hash to its key is refused with
//     ErrInvalid. Disk errors come back as errors, never as success and
//     never as panics: no room as ErrFull, other write or sync failures
//     as ErrIO (counted in Stats.WriteErrors), and the store keeps
//     working once the cause is gone. A page of the mapped file that cannot be
//     read (which would fault and kill the process) or that bbolt finds
//     malformed fails the read or write with an error matching ErrCorrupt.
//
// # Durability and the ack ordering
//
// All writes go through one committer goroutine, in submission order. It
// takes every write queued (up to Config.MaxBatch writes and
// Config.MaxBatchBytes bytes, waiting up to Config.GroupCommitWindow for
// more if configured), applies them in one bbolt transaction and commits
// it. bbolt's commit writes the changed pages, fdatasyncs the file, writes
// the meta page and fdatasyncs again, and returns only then; the store
// never sets bbolt's NoSync (Config cannot express it, and every commit
// checks it), so a transaction is on stable storage when its commit
// returns nil.
//
// The guarantee: a write's completion (the done callback of PutAsync and
// ExtendLeaseAsync, or the return of Put and the other synchronous
// writes) reports success strictly after the commit that contains the
// write has returned from its fsync. That completion is the only point at
// which a storage receipt or other acknowledgement may be sent to another
// node. Completions fire in submission order, one at a time, on the
// committer goroutine. If a transaction fails, its writes are retried one
// per transaction, so one write that does not fit does not fail the
// others; a write whose completion reports an error may or may not have
// reached the disk and must be treated as not stored (retrying is safe:
// puts are idempotent). Readers may see a write from the moment bbolt
// writes its meta page, a moment before the final fsync returns: only a
// completion says a write is durable. Config.Observer sees each step (submitted, sync
// started, sync done, completed); the tests use it to prove the ordering
// across many concurrent writers.
//
// Besides the committer, which Open starts and Close stops, the package
// starts no goroutines and keeps no package-level mutable state.
package store
