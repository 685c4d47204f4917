#!/usr/bin/env bash
# make demo: three emulated FreeSWITCH nodes and the balancer on loopback, a
# burst of calls (INVITE, re-INVITE, BYE, with RTP both ways) through the
# balancer, and one node killed (SIGKILL) midway. Prints how the calls spread
# over the nodes, how many failed (new calls apart from calls cut by the
# kill), and the RTP loss per call. Every process started here is stopped on
# exit.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=./bin
DIR=.demo
CALLS=${CALLS:-1500}
RATE=${RATE:-150}
KILL_AFTER=${KILL_AFTER:-4}
HOLD=${HOLD:-200ms}
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
	"$BIN/fsemu" -id "fs$i" -listen "127.0.0.1:2506$i" -control "127.0.0.1:2507$i" -rtp -log-level warn \
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

echo "== placing $CALLS calls at $RATE/s (INVITE, ACK, $HOLD, re-INVITE, ACK, $HOLD, BYE; RTP both ways, 20 ms PCMU); fs2 is killed after ${KILL_AFTER}s"
set +e
"$BIN/sipcallgen" -target "$LB" -calls "$CALLS" -rate "$RATE" -hold "$HOLD" -rtp -timeout 5s -json \
	>"$DIR/calls.json" 2>"$DIR/sipcallgen.log" &
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
# The summary is indented JSON; flatten it so each field is found with sed.
json=$(tr -d '\n' <"$DIR/calls.json")
field() { printf '%s' "$json" | sed -n "s/.*\"$1\": *\([^,}]*\).*/\1/p" | tr -d '" '; }
num() { v=$(field "$1"); echo "${v:-0}"; }

echo
echo "== result (from sipcallgen)"
setup_failed=$(num setup_failed)
cut=$(num cut)
printf "   calls attempted  %s\n" "$(num attempted)"
printf "   calls completed  %s\n" "$(num succeeded)"
printf "   new calls failed %s   (no answer: what failover must prevent)\n" "$setup_failed"
printf "   calls cut        %s   (answered, then their re-INVITE or BYE failed)\n" "$cut"
printf "   setup time p50   %.1f ms\n" "$(num setup_p50_ms)"
printf "   setup time p99   %.1f ms   (calls that hit the dead node first wait for failover.invite_timeout)\n" "$(num setup_p99_ms)"
errs=$(printf '%s' "$json" | sed -n 's/.*"errors": *{\([^}]*\)}.*/\1/p' | sed 's/  */ /g')
[ -n "$errs" ] && echo "   errors: $errs"

echo
echo "== media (RTP, 20 ms PCMU both ways; loss per call from the sequence numbers of what arrived)"
stopped=$(num calls_media_stopped)
printf "   calls with media  %s   (packets sent %s, received %s, lost %s)\n" "$(num calls)" "$(num sent)" "$(num received)" "$(num lost)"
printf "   RTP loss per call p50 %.2f %%, p99 %.2f %%, max %.2f %%   (calls with any loss: %s)\n" \
	"$(num loss_p50_pct)" "$(num loss_p99_pct)" "$(num loss_max_pct)" "$(num calls_with_loss)"
printf "   jitter per call   p50 %.2f ms, p99 %.2f ms, max %.2f ms\n" "$(num jitter_p50_ms)" "$(num jitter_p99_ms)" "$(num jitter_max_ms)"
printf "   calls without any media        %s\n" "$(num calls_without_media)"
printf "   calls whose media stopped      %s   (%s of them among the calls cut)\n" "$stopped" "$(num stopped_on_cut_calls)"
echo
if [ "$gen_status" = 0 ]; then
	echo "0 failed calls: every call set up, carried media and ended, the node kill included."
elif [ "$setup_failed" = 0 ]; then
	echo "0 new calls failed: the balancer moved new calls off the killed node within failover.invite_timeout."
	echo "$cut calls were in progress on fs2 when it was killed: their media stopped and their re-INVITE"
	echo "or BYE went unanswered. A killed FreeSWITCH takes the calls it carries with it; no proxy can"
	echo "save them (re-homing, session.rehome, needs nodes that share call state)."
else
	echo "$setup_failed new calls failed (see the errors above): that should not happen."
fi
echo "logs: $DIR/"
