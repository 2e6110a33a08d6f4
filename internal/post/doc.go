// Package post holds the cryptographic building blocks of POST, epost's
// secure mail layer (DESIGN.md section 6), as pure functions and types:
// no networking, no goroutines, no clock, and no randomness but the
// io.Reader each caller passes in, so a simulation replays bit for bit.
//
// A message travels in three parts:
//
//   - Body: the message, encrypted once with a ContentKey (random for a
//     member's mail, convergent for mail a gateway injects), split into
//     chunks that are immutable PAST objects named by their SHA-256
//     (SealBody, OpenBody).
//   - Notification: the chunk keys, the content key, the full recipient
//     list and the sender's certificate, signed by the sender; sealed with
//     age to each recipient's X25519 key and signed outside by the sending
//     node (Seal). The Sealed form is stored as one member of a pending set
//     at the recipient's user id until the recipient's Release drops it.
//   - Folder log entries: each encrypted under a LogKey derived from the
//     owner's keys, so the key backup alone restores them (SealEntry).
//     After a key rotation new entries use the new keys' LogKey, and the
//     retired keys' LogKeys open the older ones (OpenEntryAny).
//
// Invariants:
//   - Only a recipient (holder of the sealing key) learns a notification's
//     content, and Open accepts it only if the sender's certificate chains
//     to the community CA, the sender's signature covers the recipient
//     list and the recipient is in it: a recipient cannot re-seal someone
//     else's notification to a third party.
//   - Only the recipient can release a pending notification (Release is
//     signed by the recipient's user key).
//   - Opening never panics, whatever the bytes; sizes are bounded
//     (MaxRecipients, MaxPayload) before anything large is allocated.
//   - Decoders accept only the canonical encoding, so an object's key (its
//     hash) is a function of its content.
//   - Merging a forked folder log (merge.go) keeps every message either
//     branch holds, and its result does not depend on which side merges.
//
// What storing nodes learn. A node storing body chunks learns their
// sizes (so a message's size, to within the chunking), when they were
// inserted, and, for gateway mail, that the same Internet message reached
// several members, since convergent chunks coincide. A node storing a
// pending set learns that a notification of a given size, sent at a given
// time by a given node (and so, with one node per member, usually by a
// given member), waits for the recipient's user id; the recipient's
// address is in the clear because the node must match the recipient's
// Release, and the Release tells it when the recipient collected the
// notification. Folder-log storers learn the sizes, number and timing of
// a user's folder operations. None of them learns any content: not the
// subject, the text, the sender's address inside the notification, the
// other recipients, the content key, nor what a log entry does.
//
// Every recipient sees the full recipient list, since that is what the
// sender signs; so a blind copy needs its own notification, listing the
// visible recipients and that one blind recipient.
package post

import (
	"errors"
	"fmt"

	"github.com/epost-mail/epost/internal/wire"
)

// Errors callers match with errors.Is. Every error the package returns
// wraps at most one of these, with context in front.
var (
	// ErrTampered: a body chunk, body ref or log entry does not
	// authenticate under its key (altered, truncated, reordered, or
	// opened with the wrong key).
	ErrTampered = errors.New("post: tampered or wrong key")
	// ErrForged: a certificate or signature on a notification or release
	// does not verify (forged, altered, or from another community).
	ErrForged = errors.New("post: bad signature or certificate")
	// ErrNotForMe: the notification or release is for another recipient,
	// or the opener is not in the sender's signed recipient list.
	ErrNotForMe = errors.New("post: not addressed to this recipient")
	// ErrMalformed: the bytes do not decode to a valid object of this
	// version, or break a size bound. It wraps wire.ErrMalformed.
	ErrMalformed = fmt.Errorf("post: %w", wire.ErrMalformed)
)
