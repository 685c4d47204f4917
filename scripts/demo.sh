#!/usr/bin/env bash
# make demo: three emulated FreeSWITCH nodes and the balancer on loopback, a
# burst of calls (INVITE, re-INVITE, BYE) through the balancer, and one node
# killed (SIGKILL) midway. Prints how the calls spread over the nodes and how
# many failed. Every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=./bin
DIR=.demo
CALLS=${CALLS:-1500}
RATE=${RATE:-150}
KILL_AFTER=${KILL_AFTER:-4}
LB=127.0.0.1:25060
mkdir -p "$DIR"
rm -f "$DIR"/*.log "$DIR"/*.json

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

# Wait until a line matching $2 appears in file $1 (bounded).
wait_for() {
	for _ in $(seq 1 100); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "demo: timed out waiting for '$2' in $1" >&2
	cat "$1" >&2 || true
	exit 1
}

# GET a control endpoint with bash alone (no curl needed on a fresh machine).
http_get() { # port path
	exec 3<>"/dev/tcp/127.0.0.1/$1"
	printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
	sed -e '1,/^\r*$/d' <&3
	exec 3<&-
}
stat() { # node file field
	sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" "$1"
}
echo "== starting 3 emulated FreeSWITCH nodes"
for i in 1 2 3; do
	"$BIN/fsemu" -id "fs$i" -listen "127.0.0.1:2506$i" -control "127.0.0.1:2507$i" -log-level warn \
		>"$DIR/fs$i.out" 2>"$DIR/fs$i.log" &
	pids+=($!)
	eval "fs${i}_pid=$!"
done
for i in 1 2 3; do wait_for "$DIR/fs$i.out" "127.0.0.1:2506$i"; done

cat >"$DIR/sipbalancer.yaml" <<YAML
sip:
  listen: ["udp://$LB"]
nodes:
  - { id: fs1, sip: "127.0.0.1:25061" }
  - { id: fs2, sip: "127.0.0.1:25062" }
  - { id: fs3, sip: "127.0.0.1:25063" }
dispatcher:
  policy: weighted_round_robin
failover:
  invite_timeout: 1s
session:
  token_secret: demo-only-secret
admin:
  listen: ""
log:
  level: info
  format: console
YAML

echo "== starting sipbalancer on $LB"
"$BIN/sipbalancer" -config "$DIR/sipbalancer.yaml" 2>"$DIR/sipbalancer.log" &
lb_pid=$!
pids+=($lb_pid)
wait_for "$DIR/sipbalancer.log" "sipbalancer started"

echo "== placing $CALLS calls at $RATE/s (INVITE, ACK, re-INVITE, ACK, BYE); fs2 is killed after ${KILL_AFTER}s"
set +e
"$BIN/sipcallgen" -target "$LB" -calls "$CALLS" -rate "$RATE" -json >"$DIR/calls.json" 2>"$DIR/sipcallgen.log" &
gen_pid=$!
pids+=($gen_pid)
sleep "$KILL_AFTER"
http_get 25072 /stats >"$DIR/fs2-at-kill.json" 2>/dev/null
kill -9 "$fs2_pid"
wait "$fs2_pid" 2>/dev/null
echo "   fs2 killed (SIGKILL) at t=${KILL_AFTER}s"
wait "$gen_pid"
gen_status=$?
set -e

for i in 1 3; do http_get "2507$i" /stats >"$DIR/fs$i.json"; done
cp "$DIR/fs2-at-kill.json" "$DIR/fs2.json"

echo
echo "== calls per node (answered calls, from each node's own records)"
total=0
for i in 1 2 3; do
	n=$(stat "$DIR/fs$i.json" answered)
	n=${n:-0}
	total=$((total + n))
	note=""
	[ "$i" = 2 ] && note="  (killed at t=${KILL_AFTER}s; count taken just before)"
	printf "   fs%s  %6s%s\n" "$i" "$n" "$note"
done
echo
echo "== result (from sipcallgen)"
field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" "$DIR/calls.json" | tr -d '"'; }
printf "   calls attempted  %s\n" "$(field attempted)"
printf "   calls completed  %s\n" "$(field succeeded)"
printf "   calls failed     %s\n" "$(field failed)"
printf "   setup time p50   %.1f ms\n" "$(field setup_p50_ms)"
printf "   setup time p99   %.1f ms   (calls that hit the dead node first wait for failover.invite_timeout)\n" "$(field setup_p99_ms)"
errs=$(sed -n 's/.*"errors":{\([^}]*\)}.*/\1/p' "$DIR/calls.json")
[ -n "$errs" ] && echo "   errors: $errs"
echo
if [ "$gen_status" = 0 ]; then
	echo "0 failed calls: every call set up and ended, the node kill included."
else
	echo "some calls failed (see above). A killed FreeSWITCH takes the calls it was carrying with it;"
	echo "new calls are never lost: the balancer fails over within failover.invite_timeout."
fi
echo "logs: $DIR/"
