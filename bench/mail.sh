#!/usr/bin/env bash
# Mail benchmark: the same `epost bench` run against an epost demo
# community and against Postfix + Dovecot on this machine, interleaved, at
# concurrency 1 and 8. Writes bench/results/mail-DATE.json (every run and
# the medians) and mail-DATE.md (the table BENCHMARKS.md quotes).
#
# Postfix and Dovecot are installed from Debian packages when missing and
# run from a scratch directory on loopback-only high ports, with their
# durability settings at the defaults: Postfix takes submissions with SASL
# through Dovecot's auth service and delivers over LMTP to Dovecot, which
# stores Maildir. Nothing is sent off the machine.
#
# Environment: RUNS (5), WATCH ("poll idle"), MSG1 (50 messages per run at c=1), MSG8 (100 at
# c=8: at most the flood limit's burst, see below), SIZE (10240 bytes), NODES (16), PORT_BASE (21000), SCRATCH (a new
# temporary directory, removed at the end unless KEEP=1).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
MSG1=${MSG1:-50}
MSG8=${MSG8:-100}
SIZE=${SIZE:-10240}
NODES=${NODES:-16}
PORT_BASE=${PORT_BASE:-21000}
KEEP=${KEEP:-0}
# How the recipient's INBOX is watched: IDLE, which is what mail clients
# use, and polling every 20 ms, which Dovecot needs for a fair number: it
# delays IDLE notifications by a fixed 500 ms (NOTIFY_DELAY_MSECS in its
# mailbox-watch.c) to batch changes.
WATCH=${WATCH:-poll idle}
SCRATCH=${SCRATCH:-$(mktemp -d /tmp/epost-bench.XXXXXX)}
mkdir -p "$SCRATCH"
# Dovecot's mail user must reach the Maildirs below it.
chmod 755 "$SCRATCH"
DATE=$(date -u +%Y-%m-%d)
RESULTS=bench/results
mkdir -p "$RESULTS"
RAW=$SCRATCH/runs.jsonl
: >"$RAW"

SMTP_PORT=$((PORT_BASE + 587))
IMAP_PORT=$((PORT_BASE + 143))
LMTP_PORT=$((PORT_BASE + 24))
AUTH_PORT=$((PORT_BASE + 25))
PF=$SCRATCH/postfix
DC=$SCRATCH/dovecot
PF_USER=alice@bench.test PF_PASS=alice-pass-$$
PF_TO=bob@bench.test PF_TO_PASS=bob-pass-$$

log() { echo "mail.sh: $*" >&2; }

DEMO_PID=
cleanup() {
	set +e
	if [ -f "$PF/etc/main.cf" ]; then postfix -c "$PF/etc" stop >/dev/null 2>&1; fi
	if [ -f "$DC/run/master.pid" ]; then kill "$(cat "$DC/run/master.pid")" 2>/dev/null; fi
	if [ -n "$DEMO_PID" ]; then
		kill "$DEMO_PID" 2>/dev/null
		wait "$DEMO_PID" 2>/dev/null
	fi
	if [ "$KEEP" != 1 ]; then rm -rf "$SCRATCH"; else log "kept $SCRATCH"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_port HOST PORT SECONDS
wait_port() {
	for _ in $(seq $(($3 * 10))); do
		if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	log "nothing listens on $1:$2 after $3 s"
	return 1
}

install_servers() {
	if command -v postfix >/dev/null && command -v dovecot >/dev/null &&
		[ -x /usr/lib/dovecot/lmtp ] && [ -x /usr/lib/dovecot/imap ]; then
		return
	fi
	log "installing postfix and dovecot"
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q postfix dovecot-core dovecot-imapd dovecot-lmtpd >"$SCRATCH/apt.log" 2>&1 ||
		{ apt-get update -q >>"$SCRATCH/apt.log" 2>&1 &&
			apt-get install -y -q postfix dovecot-core dovecot-imapd dovecot-lmtpd >>"$SCRATCH/apt.log" 2>&1; }
}

start_dovecot() {
	mkdir -p "$DC/run" "$DC/state" "$DC/mail"
	chown mail:mail "$DC/mail"
	printf '%s:{PLAIN}%s\n%s:{PLAIN}%s\n' "$PF_USER" "$PF_PASS" "$PF_TO" "$PF_TO_PASS" >"$DC/passwd"
	chmod 644 "$DC/passwd"
	cat >"$DC/dovecot.conf" <<EOF
base_dir = $DC/run
state_dir = $DC/state
instance_name = epost-bench
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = $DC/dovecot.log
first_valid_uid = 1
mail_location = maildir:$DC/mail/%u
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DC/passwd
}
userdb {
  driver = static
  args = uid=mail gid=mail home=$DC/mail/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $LMTP_PORT
  }
}
service auth {
  inet_listener auth-postfix {
    address = 127.0.0.1
    port = $AUTH_PORT
  }
}
EOF
	dovecot -c "$DC/dovecot.conf"
}

start_postfix() {
	mkdir -p "$PF/etc" "$PF/spool" "$PF/data"
	chown postfix "$PF/data"
	cp /usr/share/postfix/master.cf.dist "$PF/etc/master.cf"
	cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/spool
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = bench.test
virtual_transport = lmtp:inet:127.0.0.1:$LMTP_PORT
default_transport = error:this benchmark sends nothing off the machine
relay_transport = error:this benchmark sends nothing off the machine
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:$AUTH_PORT
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtputf8_enable = no
biff = no
maillog_file_prefixes = $PF
maillog_file = $PF/maillog
EOF
	# The submission port instead of port 25, nothing chrooted (the
	# scratch directory has no chroot files).
	postconf -c "$PF/etc" -M# smtp/inet
	postconf -c "$PF/etc" -Me "127.0.0.1:$SMTP_PORT/inet = 127.0.0.1:$SMTP_PORT inet n - n - - smtpd"
	postconf -c "$PF/etc" -F '*/*/chroot = n'
	postfix -c "$PF/etc" check && postfix -c "$PF/etc" start ||
		{ cat "$PF/maillog" >&2; return 1; }
}

# status_counters URL: sums of the nodes' storage counters, as JSON.
status_counters() {
	curl -sf "${1%/}/status.json" | python3 -c '
import json, sys
r = json.load(sys.stdin)
s = {"stored": 0, "log_entries": 0, "delivered": 0, "pushes": 0, "objects": 0, "bytes": 0}
for n in r["nodes"]:
    st = n.get("storage") or {}
    for k in s:
        s[k] += st.get(k, 0)
print(json.dumps(s))'
}

log "building bin/epost"
go build -o bin/epost ./cmd/epost

log "starting epost demo with $NODES nodes in $SCRATCH/epost"
mkdir -p "$SCRATCH/epost"
./bin/epost demo --nodes "$NODES" --dir "$SCRATCH/epost" >"$SCRATCH/demo.log" 2>&1 &
DEMO_PID=$!
for i in $(seq 600); do
	grep -q '^ready' "$SCRATCH/demo.log" && break
	if ! kill -0 "$DEMO_PID" 2>/dev/null; then
		cat "$SCRATCH/demo.log" >&2
		exit 1
	fi
	if [ "$i" = 600 ]; then
		log "demo not ready after 300 s"
		tail "$SCRATCH/demo.log" >&2
		exit 1
	fi
	sleep 0.5
done
# Every epost run uses a sender and recipient pair of its own: epost
# limits the notifications one sending node may leave for one recipient
# (post.DefaultLimits: a burst of 100, then 30 a minute), so a pair used
# for run after run would measure that anti-flood limit, not delivery.
mapfile -t E_USERS < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
for u in d["users"]:
    print(u["address"], u["password"], u["smtp"], u["imap"])' "$SCRATCH/epost/demo.json")
E_STATUS=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["status"])' "$SCRATCH/epost/demo.json")
E_PAIRS=()
for off in $(seq 1 $((${#E_USERS[@]} - 1))); do
	for i in $(seq 0 $((${#E_USERS[@]} - 1))); do
		E_PAIRS+=("$i $(((i + off) % ${#E_USERS[@]}))")
	done
done
E_PAIR=0

install_servers
log "starting dovecot (IMAP 127.0.0.1:$IMAP_PORT) and postfix (submission 127.0.0.1:$SMTP_PORT)"
start_dovecot
wait_port 127.0.0.1 "$IMAP_PORT" 20
wait_port 127.0.0.1 "$AUTH_PORT" 20
start_postfix
wait_port 127.0.0.1 "$SMTP_PORT" 20

# bench SYSTEM MESSAGES CONCURRENCY RUN WATCH: one run, appended to $RAW.
# WATCH is idle or poll.
bench() {
	local sys=$1 n=$2 c=$3 run=$4 watch=$5 before after out load extra=()
	[ "$watch" = poll ] && extra=(--poll)
	load=$(cut -d' ' -f1 /proc/loadavg)
	if [ "$sys" = epost ]; then
		local fi ti E_FROM E_FROM_PASS E_SMTP E_TO E_TO_PASS E_IMAP _
		read -r fi ti <<<"${E_PAIRS[$E_PAIR]}"
		E_PAIR=$((E_PAIR + 1))
		read -r E_FROM E_FROM_PASS E_SMTP _ <<<"${E_USERS[$fi]}"
		read -r E_TO E_TO_PASS _ E_IMAP <<<"${E_USERS[$ti]}"
		before=$(status_counters "$E_STATUS")
		out=$(./bin/epost bench --json --smtp "$E_SMTP" --imap "$E_IMAP" --from "$E_FROM" --from-pass "$E_FROM_PASS" \
			--to "$E_TO" --to-pass "$E_TO_PASS" --messages "$n" --size "$SIZE" --concurrency "$c" "${extra[@]}")
		after=$(status_counters "$E_STATUS")
	else
		before='{}' after='{}'
		out=$(./bin/epost bench --json --smtp "127.0.0.1:$SMTP_PORT" --imap "127.0.0.1:$IMAP_PORT" --from "$PF_USER" --from-pass "$PF_PASS" \
			--to "$PF_TO" --to-pass "$PF_TO_PASS" --messages "$n" --size "$SIZE" --concurrency "$c" "${extra[@]}")
	fi
	python3 -c '
import json, sys
r = json.loads(sys.argv[1])
r.update(system=sys.argv[2], run=int(sys.argv[3]), load1=float(sys.argv[4]), counters_before=json.loads(sys.argv[5]), counters_after=json.loads(sys.argv[6]))
print(json.dumps(r))' "$out" "$sys" "$run" "$load" "$before" "$after" >>"$RAW"
	python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print("%-7s %s c=%d run %s: p50 %6.1f ms  p90 %6.1f  p99 %6.1f  %6.1f msg/s  errors %d  (load %s)" % (sys.argv[2], r["watch"], r["concurrency"], sys.argv[3], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["throughput"], r["errors"], sys.argv[4]))' "$out" "$sys" "$run" "$load" >&2
}

log "warm-up: 5 messages each"
bench epost 5 1 0 idle
bench postfix 5 1 0 idle
: >"$RAW"

for c in 1 8; do
	n=$MSG1
	[ "$c" = 8 ] && n=$MSG8
	for run in $(seq "$RUNS"); do
		for watch in $WATCH; do
			bench epost "$n" "$c" "$run" "$watch"
			bench postfix "$n" "$c" "$run" "$watch"
		done
	done
done

OUT=$RESULTS/mail-$DATE
python3 bench/summarize-mail.py "$RAW" "$OUT.json" "$OUT.md" "$NODES" "$SIZE"
cat "$OUT.md"
log "wrote $OUT.json and $OUT.md"
