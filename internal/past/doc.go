// Package past is replicated, verified object storage on the overlay
// (PAST, Rowstron and Druschel, SOSP 2001), as DESIGN.md section 5
// describes it: every object is kept by the k nodes whose ids are closest
// to its key, with leases counted on each holder's own uptime counter.
//
// Objects come in two kinds. An immutable object's key is the SHA-256 of
// its bytes, so any holder's copy can be checked against the key. A
// mutable object (a folder log head, a published certificate) is signed by
// its single writer's user key, named by the writer's id and a name, and
// carries a version counter: holders keep the highest valid version,
// refuse older ones (no rollback), and keep and report two valid objects
// with one version and different content (a fork).
//
// # Protocols
//
// Insert routes a PastStore to the key's root, which sends it on to the
// rest of the replica set (its k closest leaf-set members and itself).
// Each replica verifies the object (hash; or certificate, signature and
// version), stores it, and only after the store reports it durable sends
// the inserter a receipt signed by its node key. The inserter accepts once
// receipts from a majority of k come from nodes that, among every node it
// knows of (its own leaf set and routing table, the root's stated replica
// set and the signers), are the k closest to the key: a lying root cannot
// acknowledge an object and drop it, and a single faulty replica cannot
// make an insert look durable. The root's stated set counts for its
// attempt only, less any node since gone from the inserter's leaf set, so
// a replica that fails mid-insert does not block acceptance. A renewal is
// an insert without the bytes.
//
// Lookup routes to the root; the first node on the path that holds an
// immutable object answers. The reader verifies what it gets and falls
// back to the other replicas the root names. A mutable lookup asks every
// replica and returns the highest valid version (and every fork of it), so
// one stale holder cannot roll a reader back.
//
// Replica maintenance runs periodically and soon after leaf-set changes:
// each holder offers the keys it holds to the nodes that should also hold
// them and are not known to; the receiver answers with what it lacks and
// the holder pushes those objects with their remaining lease. Departed
// nodes are presumed to return (Carbonite, Chun et al., NSDI 2006): a
// holder that returns counts again, and a new node receives copies only
// once it has stayed for Config.RepairDelay, or when fewer than k holders
// have been reachable for that long, or at once when the sender holds the
// last known copy. A holder known to have held an object that now says it
// lacks it lost its copy and is given it back at once. Ordinary churn
// therefore does not recopy disks. Offers are batched lists of (kind,
// key, version, remaining lease), not summaries: after the first rounds
// they carry only what changed, and every Config.FullSyncRounds-th round
// offers everything again so that lost copies are refilled.
//
// A periodic scrub (Config.ScrubPeriod, Config.ScrubBatch) has the store
// re-verify a slice of its entries at a time, resuming where the last
// slice ended; corrupt entries are dropped and maintenance refills them.
//
// # Leases
//
// A lease is a duration, never a date. A holder stores an object with an
// expiry on its store's persisted tick counter, which this package
// advances with the node's monotonic clock; the counter survives restarts
// and knows nothing of wall time, so a node whose clock is years off
// behaves exactly like one whose clock is right. A pushed object keeps the
// lease it has left at the sender. Owners renew what they still use;
// nothing is ever deleted by request; expired objects are swept.
//
// # Invariants
//
//   - Past is a deterministic state machine on the node's event loop: no
//     goroutines, no wall clock, randomness only from env.Rand. Storage
//     completions must be delivered on the same loop.
//   - A receipt is sent only from a storage completion that reported the
//     write durable.
//   - Everything received is verified before use: objects by hash or
//     signature and certificate, receipts by the signer's certificate.
//     Bad input is refused with a reason and counted, never a panic.
package past
