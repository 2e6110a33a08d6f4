#!/usr/bin/env bash
# The README's "Running a community across machines", run end to end on
# loopback: separate `epost node` processes in separate directories stand in
# for separate machines. It makes a CA, certifies three nodes (alpha, beta,
# gamma) and two users (alice on alpha, bob on beta), starts alpha, joins
# beta and gamma through it, sends mail both ways with python3's smtplib
# and imaplib, reads bob's mail over STARTTLS trusting beta's certificate
# (a second device), revokes gamma and checks that alpha and beta refuse it,
# rotates beta's key and then bob's keys and mails again (bob still reads
# his older mail), backs the CA key up and restores it,
# and stops every node, which must exit with status 0.
#
# Usage: scripts/walkthrough.sh    (or `make walkthrough`)
# Needs go and python3. Takes about four minutes, most of it waiting for
# nodes to read revocation lists (they look once a minute).
# KEEP=1 keeps the scratch directory (logs, configs) for inspection;
# EPOST=path runs that binary instead of building bin/epost.
set -euo pipefail

cd "$(dirname "$0")/.."
if [ -z "${EPOST:-}" ]; then
	go build -o bin/epost ./cmd/epost
	EPOST=$PWD/bin/epost
fi
command -v python3 >/dev/null || { echo "walkthrough: python3 is needed for the mail clients" >&2; exit 1; }

W=$(mktemp -d "${TMPDIR:-/tmp}/epost-walkthrough.XXXXXX")
failed=1

say() { printf '\n== %s\n' "$*"; }
fail() {
	echo "walkthrough: FAILED: $*" >&2
	for m in alpha beta gamma; do
		if [ -f "$W/$m/err" ]; then
			echo "--- last log lines of $m:" >&2
			tail -n 15 "$W/$m/err" >&2
		fi
	done
	exit 1
}

# stop MACHINE: SIGTERM, then the node must exit 0 within 30 s.
stop() {
	local m=$1 p
	p=$(cat "$W/$m/pid" 2>/dev/null) || return 0
	rm -f "$W/$m/pid"
	kill -TERM "$p" 2>/dev/null || true
	for _ in $(seq 1 30); do
		kill -0 "$p" 2>/dev/null || break
		sleep 1
	done
	if kill -0 "$p" 2>/dev/null; then
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
		fail "node $m did not stop within 30 s of SIGTERM"
	fi
	local rc=0
	wait "$p" || rc=$?
	[ "$rc" -eq 0 ] || fail "node $m exited with status $rc"
}

cleanup() {
	local rc=$?
	for f in "$W"/*/pid; do
		[ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	if [ "$failed" -eq 0 ] && [ -z "${KEEP:-}" ]; then
		rm -rf "$W"
	else
		echo "walkthrough: files kept in $W" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# field MACHINE REGEX: the first group of REGEX in the node's output.
field() { sed -n -E "s#$2#\\1#p" "$W/$1/out" | tail -n 1; }

# start MACHINE: run its node, wait for "ready" (60 s).
start() {
	local m=$1
	: >"$W/$m/out"
	(cd "$W/$m" && exec "$EPOST" node --config "$m.toml" >>out 2>>err) &
	echo $! >"$W/$m/pid"
	for _ in $(seq 1 120); do
		grep -q '^ready$' "$W/$m/out" && return 0
		kill -0 "$(cat "$W/$m/pid")" 2>/dev/null || fail "node $m exited: $(tail -n 3 "$W/$m/err")"
		sleep 0.5
	done
	fail "node $m not ready after 60 s"
}

# status MACHINE EXPR: a Python expression over the node's /status.json
# (n is its node entry).
status() {
	local url
	url=$(field "$1" '^status page: (http://[^ ]+)$')
	python3 - "$url" "$2" <<'EOF'
import json, sys, urllib.request
d = json.load(urllib.request.urlopen(sys.argv[1].rstrip("/") + "/status.json", timeout=10))
n = d["nodes"][0]
print(eval(sys.argv[2]))
EOF
}

# await SECONDS WHAT CMD...: retry CMD once a second until it succeeds.
await() {
	local t=$1 what=$2
	shift 2
	for _ in $(seq 1 "$t"); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 1
	done
	fail "$what (waited $t s)"
}

# is MACHINE EXPR VALUE: the node's status.json has EXPR = VALUE.
is() { [ "$(status "$1" "$2")" = "$3" ]; }

cat >"$W/mail.py" <<'EOF'
# mail.py FROM PASSWORD SMTP TO PASSWORD IMAP SUBJECT: FROM submits a
# message over SMTP (AUTH on loopback), then TO's INBOX is searched over
# IMAP until it is there (90 s).
import imaplib, smtplib, sys, time
from email.message import EmailMessage
frm, fpw, smtp, to, tpw, imap, subject = sys.argv[1:8]
m = EmailMessage()
m["From"], m["To"], m["Subject"] = frm, to, subject
m.set_content("Sent by scripts/walkthrough.sh.\n")
host, port = smtp.rsplit(":", 1)
with smtplib.SMTP(host, int(port), timeout=60) as s:
    s.login(frm, fpw)
    s.send_message(m)
host, port = imap.rsplit(":", 1)
start = time.time()
while time.time() - start < 90:
    c = imaplib.IMAP4(host, int(port))
    c.login(to, tpw)
    c.select("INBOX", readonly=True)
    _, hits = c.search(None, "SUBJECT", '"%s"' % subject)
    c.logout()
    if hits[0]:
        print("%s -> %s: %r arrived after %.1f s" % (frm, to, subject, time.time() - start))
        sys.exit(0)
    time.sleep(1)
sys.exit("%s -> %s: %r did not arrive within 90 s" % (frm, to, subject))
EOF

# mail FROM TO SUBJECT, with FROM and TO among alice@alpha and bob@beta.
machine_of() { case $1 in alice@*) echo alpha ;; bob@*) echo beta ;; esac; }
password_of() { echo "${1%@*}'s long password"; }
mail() {
	local f=$1 t=$2
	python3 "$W/mail.py" "$f" "$(password_of "$f")" "$(field "$(machine_of "$f")" '^SMTP on (.+)$')" \
		"$t" "$(password_of "$t")" "$(field "$(machine_of "$t")" '^IMAP on (.+)$')" "$3" ||
		fail "mail from $f to $t"
}

say "the CA holder: a CA, three nodes, two users with passwords ($W/ca)"
mkdir -p "$W/ca"
cd "$W/ca"
"$EPOST" ca init --dir ./community
for m in alpha beta gamma; do "$EPOST" ca issue-node --dir ./community --name "$m"; done
for u in alice@example.org bob@example.org; do
	"$EPOST" user new --dir ./community "$u" >/dev/null # the recovery code, not needed here
	printf '%s\n' "$(password_of "$u")" | "$EPOST" user passwd --dir ./community --password-file - "$u"
done

say "each machine gets ca/ca.pub, its nodes/NAME/ and its users' users/ADDRESS/"
# copy MACHINE [USER]
copy() {
	mkdir -p "$W/$1/community/ca" "$W/$1/community/nodes" "$W/$1/community/users"
	cp "$W/ca/community/ca/ca.pub" "$W/$1/community/ca/"
	cp -R "$W/ca/community/nodes/$1" "$W/$1/community/nodes/"
	if [ -n "${2:-}" ]; then cp -R "$W/ca/community/users/$2" "$W/$1/community/users/"; fi
}
copy alpha alice@example.org
copy beta bob@example.org
copy gamma

# configure MACHINE [epost init flags...]: `epost init`, then every
# address on loopback with ports the system picks (the node prints them).
configure() {
	local m=$1
	shift
	(cd "$W/$m" && "$EPOST" init --dir ./community --node "$m" "$@" --out "$m.toml")
	sed -i.orig -E \
		-e 's#^listen = .*#listen = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]#' \
		-e 's#^imap = .*#imap = "127.0.0.1:0"#' \
		-e 's#^smtp = .*#smtp = "127.0.0.1:0"#' \
		-e 's#^status = .*#status = "127.0.0.1:0"#' \
		"$W/$m/$m.toml"
}

say "alpha starts the ring"
configure alpha --user alice@example.org
start alpha
BOOT=$(field alpha '^node [0-9a-f]+ at (/ip4/[^ ]+)$')
[ -n "$BOOT" ] || fail "alpha printed no address"
echo "alpha at $BOOT"

say "beta and gamma join through alpha"
configure beta --user bob@example.org --bootstrap "$BOOT"
start beta
configure gamma --bootstrap "$BOOT"
start gamma
for m in alpha beta gamma; do
	await 60 "$m never held both other nodes in its leaf set" \
		is "$m" 'n["leaf_set"]' 2
done
echo "three nodes, each with the other two in its leaf set"

say "mail between the machines"
mail alice@example.org bob@example.org "alice to bob"
mail bob@example.org alice@example.org "bob to alice"

say "bob on a second device: IMAP and SMTP over STARTTLS, trusting beta's certificate"
CERT=$(field beta '^mail TLS certificate (.+) \(SHA-256 [0-9a-f]+\)$')
case $CERT in /*) ;; *) CERT=$W/beta/$CERT ;; esac
[ -f "$CERT" ] || fail "beta printed no mail TLS certificate"
python3 - "$CERT" "$(field beta '^IMAP on (.+)$')" "$(field beta '^SMTP on (.+)$')" "$(password_of bob@example.org)" <<'EOF' || fail "bob over TLS"
import imaplib, smtplib, ssl, sys
cert, imap, smtp, pw = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=cert)  # verifies the chain and the host name
host, port = imap.rsplit(":", 1)
c = imaplib.IMAP4(host, int(port))
c.starttls(ssl_context=ctx)
c.login("bob@example.org", pw)
c.select("INBOX", readonly=True)
_, hits = c.search(None, "SUBJECT", '"alice to bob"')
assert hits[0], "alice's message is not in bob's INBOX"
c.logout()
host, port = smtp.rsplit(":", 1)
with smtplib.SMTP(host, int(port), timeout=60) as s:
    s.starttls(context=ctx)
    s.login("bob@example.org", pw)
print("bob read his INBOX and logged in to SMTP over TLS, trusting", cert)
EOF

say "revoking gamma"
GAMMA_PEER=$(field gamma '^node [0-9a-f]+ at /ip4/.*/p2p/([^/ ]+)$')
(cd "$W/ca" && "$EPOST" ca revoke --dir ./community --node gamma)
for m in alpha beta; do cp "$W/ca/community/ca/revocation-00000001.list" "$W/$m/community/ca/"; done
for m in alpha beta; do
	await 120 "$m never adopted revocation epoch 1" is "$m" 'n["revocation_epoch"]' 1
	await 120 "$m never refused gamma" grep -q "refused peer.*peer=$GAMMA_PEER" "$W/$m/err"
	await 60 "$m still holds gamma in its leaf set" is "$m" 'n["leaf_set"]' 1
done
echo "alpha and beta enforce epoch 1 and refuse gamma ($GAMMA_PEER)"
stop gamma
mail alice@example.org bob@example.org "alice to bob, gamma revoked"

say "rotating beta's key"
(cd "$W/ca" && "$EPOST" ca rotate-node --dir ./community --name beta)
stop beta
rm -rf "$W/beta/community/nodes/beta"
cp -R "$W/ca/community/nodes/beta" "$W/beta/community/nodes/"
start beta
for m in alpha beta; do cp "$W/ca/community/ca/revocation-00000002.list" "$W/$m/community/ca/"; done
for m in alpha beta; do
	await 120 "$m never adopted revocation epoch 2" is "$m" 'n["revocation_epoch"]' 2
done
await 60 "alpha and beta did not find each other again" is alpha 'n["leaf_set"]' 1
mail alice@example.org bob@example.org "alice to bob, beta rotated"
mail bob@example.org alice@example.org "bob to alice, beta rotated"

say "rotating bob's keys"
(cd "$W/ca" && "$EPOST" user rotate-key --dir ./community bob@example.org >/dev/null) # prints the new recovery code
stop beta
rm -rf "$W/beta/community/users/bob@example.org"
cp -R "$W/ca/community/users/bob@example.org" "$W/beta/community/users/"
start beta
await 60 "alpha and beta did not find each other again" is alpha 'n["leaf_set"]' 1
python3 - "$(field beta '^IMAP on (.+)$')" "$(password_of bob@example.org)" <<'EOF2' || fail "bob's mail from before the rotation"
import imaplib, sys, time
host, port = sys.argv[1].rsplit(":", 1)
start = time.time()
while True:
    c = imaplib.IMAP4(host, int(port))
    c.login("bob@example.org", sys.argv[2])
    c.select("INBOX", readonly=True)
    _, hits = c.search(None, "SUBJECT", '"alice to bob, beta rotated"')
    c.logout()
    if hits[0]:
        break
    if time.time() - start > 60:
        sys.exit("bob's INBOX lost the mail from before his key rotation")
    time.sleep(1)
print("bob still reads the mail from before his key rotation")
EOF2
mail alice@example.org bob@example.org "alice to bob, bob rotated"
mail bob@example.org alice@example.org "bob to alice, bob rotated"

say "CA backup and restore"
cd "$W/ca"
CODE=$("$EPOST" ca backup --dir ./community --out ca-backup.age | sed -n -E 's/.*shown only now: ([0-9A-Z-]+)$/\1/p')
[ -n "$CODE" ] || fail "ca backup printed no recovery code"
"$EPOST" ca restore --dir ./restored --backup ca-backup.age --code "$CODE"
cmp -s community/ca/ca.key restored/ca/ca.key || fail "the restored CA key differs"

say "stopping every node"
for m in alpha beta; do stop "$m"; done
failed=0
say "walkthrough: OK"
