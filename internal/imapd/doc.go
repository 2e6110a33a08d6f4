// Package imapd serves a node's users over IMAP (RFC 3501 IMAP4rev1 and
// RFC 9051 IMAP4rev2 where go-imap v2 supports them), with POST's folder
// logs as the only mail store (DESIGN.md section 7).
//
// The protocol itself (parsing, literals, responses, capabilities) is
// github.com/emersion/go-imap/v2's imapserver; this package is the
// Session backend behind it. Each IMAP connection runs on its own
// goroutine, which never touches POST directly: every read and every
// write is a func run on the node's event loop through Loop.Do, and a
// write's completion callback hands its result back over a channel that
// the connection's goroutine waits on after Do has returned, so the loop
// never blocks on a client.
//
// Invariants:
//
//   - POST owns the mail. A session keeps only what IMAP makes
//     per-connection: the selected folder's message-sequence-number to UID
//     map as this client last heard it (RFC 9051 section 2.3.1.2), with
//     the flags it last reported, so that unsolicited EXISTS, EXPUNGE and
//     FETCH FLAGS responses tell the client exactly what changed. UIDs,
//     UIDVALIDITY and UIDNEXT are POST's, so they persist across restarts.
//
//   - Sequence numbers change only when the client may see them change:
//     expunges are reported (and the map shrunk) only where RFC 9051
//     section 7.5.1 allows an EXPUNGE response, never during FETCH, STORE
//     or SEARCH.
//
//   - OK means durable: APPEND, STORE, COPY, MOVE, EXPUNGE, CREATE,
//     DELETE and RENAME answer OK only after POST's done callback
//     reported success; a failure or a timeout answers NO [UNAVAILABLE],
//     with a text saying when this node's disk is full or failing, and an
//     APPEND past the user's quota (post.Config.Quota) answers NO
//     [OVERQUOTA] (RFC 5530). go-imap v2's server has no QUOTA extension
//     (RFC 9208), so GETQUOTA is not offered; the node's status page
//     shows each user's usage and quota.
//
//   - IDLE is driven by Folder.Watch, which POST calls on the loop after
//     every change to a folder (a delivery, another session's STORE); the
//     watch only signals a channel, so it never blocks the loop. Nothing
//     polls. A watch cannot be removed, so the server registers one per
//     folder and fans it out to the sessions that have the folder selected.
//
//   - Hostile clients are bounded: failed logins are counted per username
//     and per remote address (Config.AuthLimit), and past a few of them the
//     username or address is locked out for an exponentially growing time;
//     connections are limited in all and per address; a client silent for
//     Config.LoginTimeout before login, or Config.IdleTimeout after it
//     (IDLE included), is disconnected; APPEND takes at most
//     Config.AppendLimit bytes, other literals at most 4 KiB and a command
//     line at most 50 KiB (go-imap's limits; an oversized literal is
//     answered at once, and a mailbox name that is not UTF-8 or modified
//     UTF-7 gets BAD, see cmdWatch); a message whose MIME parts
//     nest deeper than 32 levels is served as one text/plain part, since
//     parsing such nesting costs time quadratic in its depth. Server.Stats
//     counts the refusals.
//
// TLS: Config.TLS enables STARTTLS (Serve) and implicit TLS (ServeTLS);
// SelfSigned makes a node's default certificate. Without TLS, only
// InsecureAuth (loopback) allows LOGIN.
//
// Subscriptions (SUBSCRIBE, UNSUBSCRIBE, LSUB, LIST (SUBSCRIBED)) are
// kept by POST in the user's root record: they survive restarts and
// follow the user to another node. Folders start subscribed; only
// existing folders can be subscribed.
//
// Not yet: renaming INBOX (refused), CONDSTORE, \Recent
// (always 0), and keeping a node's self-signed certificate across
// restarts (the node's job).
package imapd
