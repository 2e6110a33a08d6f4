// Package identity is who is who in an epost community (DESIGN.md section
// 3): the community CA, node and user certificates, typed keys, revocation
// epochs, key backups sealed with a recovery code, and the files that hold
// them in a data directory.
//
// Invariants:
//   - Key types never mix: a SigningKey (a user's Ed25519 key), a NodeKey
//     (a node's Ed25519 key, later its libp2p identity), the CA's key and a
//     SealingKey (a user's X25519 key for age) are distinct types, and so
//     are their public halves. Private keys print as "(redacted)".
//   - A NodeID is drawn at random by the CA, never derived from the node's
//     key: a key-derived id could be ground until it lands next to a
//     victim's data. A UserID is always id.ForUser of the canonical address.
//   - A signed object is the CBOR of {Body, Sig}. Sig is Ed25519 over a
//     per-kind domain-separation label followed by the exact Body bytes,
//     and is checked before the body is interpreted. Bodies carry a format
//     version and the CA fingerprint; decoders are strict (internal/wire),
//     fuzzed, and never panic.
//   - A Verifier is immutable: it holds the CA public key and one
//     revocation epoch. WithRevocation returns a new Verifier and never
//     accepts an epoch older than the one held, so a stale list replayed
//     by a peer cannot un-revoke anyone.
//   - All randomness comes from an io.Reader the caller passes (an
//     env.Rand in simulation, crypto/rand in production), so key material
//     and certificates are reproducible from a seed. The one exception is
//     SealBackup: age draws its file key and scrypt salt from crypto/rand.
//   - Files: private keys are written 0600 in 0700 directories, through a
//     temporary file linked into place, and never overwrite an existing
//     file (ErrExists).
//
// The package has no mutable package-level state.
package identity
