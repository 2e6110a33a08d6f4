// Package glacier holds the pure building blocks of the archive that
// keeps users' data through correlated failures (Glacier, in ePOST):
// bundles of objects, erasure coded into N fragments any M of which
// rebuild the bundle, each fragment provable against a Merkle root in a
// manifest the owner signs, and placed on evenly spaced points of the
// ring. The protocol that stores, audits and repairs fragments lives in
// the package's other files; everything here is deterministic and
// side-effect free.
//
// # Invariants
//
//   - A bundle, a manifest and a fragment each have exactly one encoding
//     (deterministic CBOR, checked on decode), so hashes name them.
//   - Decoders return errors on bad input and never panic (fuzzed).
//   - Fragment i of the bundle with key K is stored near K + i*floor(2^128/N)
//     and carries a Merkle proof of shard i against the manifest's root, so
//     a holder can prove what it holds and no fragment can be passed off at
//     another index or under another manifest.
//   - Manifests chain: each names the hash of its owner's previous one, and
//     bundle Seq of a user sits at BundleKey(user, Seq), so recovery needs
//     nothing but the user id and key.
//
// Ring positions (bundle keys, fragment keys, owners) are id.ID; an
// object's PAST key is the 32-byte key PAST stores it under.
//
// # Protocol
//
// Glacier runs between PAST and POST as an overlay App, a deterministic
// state machine like the other cores.
//
//   - Archiving. Each local user has a queue (Archive). A queue is sealed
//     into a bundle when it reaches MaxBundleBytes or MaxBundleObjects, or
//     SealAhead (30 s) before its oldest object has waited ArchiveDelay
//     (10 minutes), so that placement, which takes seconds, ends within
//     the delay. Sealing encodes the bundle, signs the manifest (chained
//     to the previous one) and routes fragment i to the root of its
//     offset key.
//   - Compaction. A bundle sealed less than half full is partial. Once
//     an owner's placed partial bundles would fill three quarters of a
//     bundle, CompactMax (64) of them wait, or the oldest has waited
//     CompactAfter (a day), the owner fetches them back, seals their
//     objects into one bundle at the next position whose signed manifest
//     lists the positions it supersedes, and once that one is fully
//     acknowledged stops renewing the old ones and asks their holders to
//     free them (GlacierRelease, which carries the new manifest and the
//     owner's certificate as proof). A compacted bundle is not compacted
//     again, so a freed run of positions is at most about CompactMax
//     long.
//   - Holding. A holder verifies the owner's certificate (community CA),
//     the manifest's signature and the fragment's proof, then stores it
//     (store.KindFragment, with a lease on its own uptime counter) and
//     acknowledges once it is durable. A node that holds its share of the
//     bundle already (Config.PerNode) hands the fragment to its clockwise
//     neighbour, so fragments land on distinct nodes, or balanced when the
//     community is smaller than N. The owner re-sends what is not
//     acknowledged.
//   - Fetching. Fetch routes a request to every offset key; the node
//     reached answers with what it holds of the bundle (all of it to the
//     first request of a fetch, the fragment asked for to later ones) and
//     walks the request clockwise when the fragment asked for was handed
//     on. The fetcher verifies every record and decodes as soon as M
//     fragments of one manifest are in. Recover walks a user's chain from
//     Seq 0, checking that each manifest names its predecessor when both
//     are found. A missing position does not end the walk: it looks up to
//     RecoverLookAhead (80) positions further, skips positions a later
//     manifest supersedes, keeps going past a bundle with too few
//     fragments, and ends with ErrLost naming every position neither
//     rebuilt nor superseded. RecoverFloor also takes a position the
//     chain reaches at least (the user's root record names one, from
//     OnChainPlaced): the walk does not end before it, and positions up
//     to it not found are lost too, not past the end.
//   - Audits and repair. Once per AuditPeriod every holder sends the
//     coordinators of its bundles (the roots of the bundle keys) one
//     entry per bundle (bundle key, manifest hash, indices held), sorted
//     by key and batched up to 256 entries a message; each message is
//     routed to its first key and each coordinator takes its entries and
//     routes the rest on. The keys of the bundles a node holds fragment i
//     of fall in a narrow arc (fragment keys are evenly spaced offsets of
//     the bundle key), so a holder sends a few messages per fragment
//     index it holds, not one per bundle. A coordinator that counts fewer
//     than RepairBelow fragments in a window asks the holders it heard
//     of, in a random order, for M plus a slack (M/8, at least 4)
//     fragments, more only when a round times out, decodes once,
//     regenerates every missing fragment (the same shards, so the signed
//     root still covers them) and places those. Coordinators keep only
//     soft state; a new one recounts from the next round of reports.
//
// # Choosing N and M
//
// CodeFor(nodes, 4) gives the code. Fragments are balanced over holders
// (Assign): with n fragments on R nodes every node holds floor(n/R) or
// ceil(n/R), and with n <= R every fragment has its own node. N is at
// most 256 (Reed-Solomon over GF(2^8)).
//
// Storage. The overhead budget covers metadata: each fragment carries the
// signed manifest (about 200 bytes) and a Merkle proof (8 hashes), 485
// bytes in all, and CodeFor budgets RecordExtra (320 bytes) more for what
// a holder keeps beside it (the owner's certificate, stored once per
// owner and holder, and framing). Bundles hold up to MaxBundleBytes
// (2 MiB). For a full bundle under 256/64 a shard is 32,768 bytes and
// the fragments total 4.098 times the bundle; under 256/66 a shard is
// 31,776 bytes and the total 3.977. So CodeFor takes the smallest M whose
// full-bundle total fits the budget, 66 rather than the nominal 64.
// Smaller bundles pay relatively more: a bundle of S bytes costs about
// 256/66 + 256*805/S times S, so a bundle sealed half full by the
// archive delay costs 4.08 and one of 100 KB 5.9. Heavy users fill
// their bundles; a light user's mail is archived within the delay at
// that higher cost, until compaction merges its partial bundles.
//
// With fewer than 256 nodes every node holds j = floor(256/nodes)
// fragments and N = nodes*j, so a bundle survives exactly when
// k = ceil(M/j) of its holders do. M is therefore a multiple of j: for
// 16 nodes M = 64 would need 4 survivors, but costs 4.118; M = 66 to 79
// would fit the budget and still need 5 survivors, at more storage than
// M = 80, which needs 5 and stores 3.319.
//
// Loss. Two failure models, F = 0.6, computed by LossCorrelated,
// LossIndependent and SurvivesWorst on an actual placement (Assign on a
// random ring; TestLossTable prints them):
//
//   - Correlated: exactly F*N of the N nodes fail at once, the failed set
//     uniform. Loss = P(fewer than M fragments on survivors), exact
//     (hypergeometric over holders and non-holders).
//   - Independent: each node fails on its own with probability F.
//     Loss = P(fewer than M fragments survive), exact (binomial-like
//     convolution over holders).
//
// The figures, stored being the fragments' total bytes over the bundle's
// for a full bundle, metadata budget included:
//
//	nodes  code    stored  holders x frags  survives worst ceil(FN)  correlated  independent
//	   16  256/80  3.298   16 x 16          yes (10 fail, 6 left)    0           0.167
//	   50  250/65  3.942   50 x 5           yes (30 fail, 20 left)   0           0.0133
//	  256  256/66  3.977   256 x 1          yes (154 fail, 102 left) 0           6.5e-7
//	 1000  256/66  3.977   256 x 1          no                       1.3e-8      6.5e-7
//	50000  256/66  3.977   256 x 1          no                       6.1e-7      6.5e-7
//
// For comparison, 256/64 (stored 4.098) gives 1.6e-7 independent and
// 2.1e-9 correlated at 1000 nodes; 256/65 (4.037) 3.2e-7 and 5.3e-9.
//
// Reading the table: below 256 nodes every node is a holder, so when
// exactly 60% fail the survivors always hold enough (the worst case
// survives). Independent failures are harsher on small communities,
// because a small community can itself lose far more than 60% of its
// nodes: with 16 nodes, 12 or more of 16 fail with probability 0.167, and
// no code within a budget of 4 avoids it (256/64, needing 4 survivors,
// still loses with probability 0.065). From 256 nodes on a bundle has 256
// distinct holders and the loss no longer depends on the community's
// size; correlated loss tends to the independent figure as the community
// grows, since sampling 256 holders from many nodes approaches
// independent sampling.
//
// Coding speed: see BENCHMARKS.md (Glacier) for this package's
// benchmarks on the product's code, 256/66.
package glacier
