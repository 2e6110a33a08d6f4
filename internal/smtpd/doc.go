// Package smtpd is a node's SMTP submission server (RFC 6409, on
// github.com/emersion/go-smtp): the user's ordinary mail client hands it
// a message, and it delivers the message to community members by POST and
// to everyone else through an outbound gateway (DESIGN.md section 7).
//
// Recipients outside the community go to Config.Outbound: a Smarthost
// (the community's gateway node, or a provider) or any other Outbound.
//
// It speaks ESMTP (RFC 5321) with PIPELINING (RFC 2920), 8BITMIME
// (RFC 6152), SMTPUTF8 (RFC 6531), SIZE (RFC 1870), ENHANCEDSTATUSCODES
// (RFC 2034) and AUTH PLAIN (RFC 4616) and LOGIN (RFC 4954,
// draft-murchison-sasl-login). STARTTLS (RFC 3207) is offered when the
// Config carries a TLS configuration; implicit TLS (port 465, RFC 8314)
// is a tls.NewListener passed to Serve.
//
// With SMTPUTF8 on MAIL, a recipient may be internationalised (RFC 6531):
// its domain is taken in ASCII (IDNA) form, so a member is reached through
// the Unicode spelling of a community domain; a non-ASCII local part can
// only be outside the community (members' addresses are ASCII) and goes to
// the Outbound gateway, which a Smarthost or DirectMX relays with
// SMTPUTF8 (a smarthost without it makes that a 451; an exchanger without
// it, a bounce). Without SMTPUTF8 a non-ASCII
// address gets 553 5.6.7. Replies never echo the client's raw bytes:
// anything but printable ASCII in them is written as \xNN.
//
// Invariants:
//   - No 250 before durable. The reply to DATA is 250 only after POST's
//     Send has reported that the body and every recipient's notification
//     are durably stored at their replica sets (and, for recipients outside
//     the community, after the Outbound gateway accepted the message).
//     Anything short of that (POST failed, the node's loop stopped, no
//     answer within Config.SendTimeout) is a 4xx temporary failure, so the
//     client keeps the message and retries: 452 4.3.1 when the insert
//     failed because this node's disk is full (a full disk elsewhere, or
//     here while a majority of replicas still have room, does not stop
//     mail), 451 4.3.0 for a disk error or anything else (see
//     mailnet.TempFailure). A recipient this node serves whose mailbox is
//     over its quota (post.Config.Quota, counting the SIZE declared at
//     MAIL) gets 452 4.2.2 at RCPT. A retry is harmless: the bytes
//     are stored exactly as received (nothing is prepended), so the same
//     sender, recipients and bytes give POST the same message id, and each
//     recipient keeps one copy.
//   - Never a relay without authentication. An unauthenticated session
//     cannot start a transaction at all (MAIL is refused with 530), the
//     envelope sender must be the authenticated user (else 553), recipients
//     outside the community are refused with 550 unless an Outbound gateway
//     is configured, and unknown community recipients are refused at RCPT
//     with 550.
//   - Passwords never cross a network in the clear: AUTH is offered and
//     accepted only over TLS, or on a loopback connection.
//   - Guessing passwords is slow: failed AUTH attempts are counted per
//     username and per remote address (IPv6 per /64), and after a few of
//     them the username or address is locked out for an exponentially
//     growing time (a username sooner than an address, so one user's typos
//     on the shared loopback address do not lock out the others).
//   - Hostile input is bounded: a message by MaxMessageBytes (552), a
//     transaction by MaxRecipients (452), a command line by go-smtp's 2000
//     bytes (500, and the connection ends), connections in all and per
//     address (421), and a silent client by ReadTimeout (421). Stats counts
//     the refusals.
//   - Blind copies stay blind: every recipient of a POST notification sees
//     its signed recipient list, so envelope recipients not named in To or
//     Cc each get a notification of their own (deterministically, so a
//     retry still deduplicates).
//   - A user's sending is rate-limited (Config.SendLimit, recipients per
//     minute), so a stolen password cannot turn the node into a spam
//     source; a message over the limit gets a 451 and is not stored.
//   - POST is touched only on the node's event loop (Config.Loop); the SMTP
//     goroutines wait for POST's callbacks on channels, with a timeout.
package smtpd
