// Package gateway is a community's door to the Internet's mail (DESIGN.md
// section 7, issue 7 item 3): an MX server that takes Internet mail for the
// community's members and injects it by POST, with SPF, DKIM and DMARC
// checks and a junk score; an outbound relay that DKIM-signs the
// community's mail for the Internet; and the DNS records a community
// publishes for its domains.
//
// Inbound (Server): an SMTP server (RFC 5321, on
// github.com/emersion/go-smtp) without AUTH. Each accepted message is
// checked (SPF, RFC 7208, with blitiri.com.ar/go/spf; DKIM, RFC 6376, and
// DMARC, RFC 7489, with github.com/emersion/go-msgauth), the results are
// prepended as an Authentication-Results header (RFC 8601) naming
// Config.Hostname, a junk score is computed from them and from an optional
// external Filter, and the message is handed to POST's Inject as the
// gateway's own user (Config.Gateway), which the community lists in
// post.Config.Gateways so that its mail may carry any From without being
// marked $Phishing.
//
// Invariants:
//   - Never a relay. RCPT is accepted only for an address in one of
//     Config.Domains that POST knows as a member (550 otherwise); mail is
//     only ever injected into the community, never sent on.
//   - No 250 before durable. The reply to DATA is 250 only after Inject
//     reported done(nil): the body and every notification are stored at
//     their replica sets. Anything else (POST failed, the loop stopped, no
//     answer within Config.InjectTimeout, a DNS check that timed out) is a
//     4xx (452 if this node's disk is full, else 451; mailnet.TempFailure),
//     so the sending MTA keeps the message and retries.
//   - A retry is the same message. What the gateway adds to a message
//     (Authentication-Results, X-Epost-Junk) depends only on the message,
//     the envelope, the client's address and DNS answers, never on the
//     clock, so a retried message has the same bytes and POST's message id
//     deduplicates it: each recipient keeps one copy. (For this reason no
//     time-stamped Received line is added.)
//   - Results cannot be forged from outside: Authentication-Results fields
//     that name this gateway's Hostname and any X-Epost-Junk field already
//     in a message are removed before the gateway's own are added (RFC 8601
//     section 5).
//   - Abuse is bounded: message size, recipients per message, command
//     timeouts, open connections (in all and per client address, an IPv6
//     address counting as its /64), and the rate of new connections and of
//     messages per client address.
//   - Checks never touch the real DNS in tests: every lookup goes through
//     Config.Resolver.
//   - POST is touched only on the node's event loop (Config.Loop); SMTP
//     goroutines wait for POST's callbacks on buffered channels, with a
//     timeout.
//
// Junk: a message whose score reaches the threshold is marked with a
// header "X-Epost-Junk: yes (score N)" (post.JunkHeader); the recipient's
// node files gateway mail so marked in the recipient's Junk folder instead
// of INBOX (post's delivery; only for mail injected by a user listed in
// post.Config.Gateways, so nobody else can file mail there).
//
// Outbound (Outbound): an implementation of smtpd.Outbound that refuses
// senders outside the community's domains, DKIM-signs each message with the
// sender domain's keys, remembers what it handed on (a submitting client's
// retry is not sent twice), and hands it to a next hop (a Relayer):
// smtpd.Smarthost, or DirectMX, which delivers to the recipients' mail
// exchangers from a bounded in-memory queue, retrying with exponential
// backoff and bouncing permanent failures to the sender (for a community
// sender, through Server.Inject).
//
// DNS (Records): the MX, SPF, DKIM and DMARC records to publish for a
// domain.
package gateway
