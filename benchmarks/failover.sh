#!/usr/bin/env bash
# Node failure under load: sipp's UAC (benchmarks/sipp/uac_reinvite.xml) at
# RATE calls/s through sipbalancer to three fsemu nodes (SIP + Event Socket,
# FreeSWITCH's default 20 s HEARTBEAT), default health settings. Midway one
# node is killed (kill -9) or frozen (SIGSTOP: no RST, no answers). Reports
# sipp's failed calls, when the balancer marked the node down, and the time
# from the failure to the last INVITE the balancer sent to that node.
#
#   benchmarks/failover.sh [kill|stop] [RATE] [SECONDS]
#
# Needs bin/ (make build) and sipp (make deps).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-kill}
RATE=${2:-100}
SECS=${3:-20}
CALLS=$((RATE * SECS))
AT=$((SECS / 2))
OUT=benchmarks/out/failover-$MODE-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
LB=127.0.0.1:27060

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM
wait_for() {
	for _ in $(seq 1 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
	echo "timed out waiting for $2 in $1" >&2; exit 1
}

for i in 1 2 3; do
	./bin/fsemu -id "fs$i" -listen "127.0.3.$i:5060" -esl "127.0.3.$i:8021" -log-level error \
		>"$OUT/fs$i.out" 2>"$OUT/fs$i.log" &
	pids+=($!)
	eval "fs${i}_pid=$!"
	wait_for "$OUT/fs$i.out" "127.0.3.$i:5060"
done
cat >"$OUT/sipbalancer.yaml" <<YAML
sip:
  listen: ["udp://$LB"]
nodes:
  - { id: fs1, sip: "127.0.3.1:5060", esl: "127.0.3.1:8021" }
  - { id: fs2, sip: "127.0.3.2:5060", esl: "127.0.3.2:8021" }
  - { id: fs3, sip: "127.0.3.3:5060", esl: "127.0.3.3:8021" }
dispatcher:
  policy: weighted_round_robin
session:
  token_secret: benchmark-only
admin:
  listen: ""
log:
  level: debug
  sampling: false
YAML
./bin/sipbalancer -config "$OUT/sipbalancer.yaml" 2>"$OUT/sipbalancer.log" &
pids+=($!)
wait_for "$OUT/sipbalancer.log" "sipbalancer started"
sleep 2 # Event Socket connected, first probes done

sipp -sf benchmarks/sipp/uac_reinvite.xml -i 127.0.0.1 -p 27059 -m "$CALLS" -r "$RATE" -l $((RATE * 4)) \
	-recv_timeout 10000 -timeout $((SECS + 60))s -trace_err -error_file "$OUT/errors.log" -trace_stat -stf "$OUT/stat.csv" -fd 1 \
	-nostdin "$LB" >"$OUT/sipp.out" 2>&1 &
sipp_pid=$!
sleep "$AT"
t_fail=$(date +%s.%N)
if [ "$MODE" = stop ]; then kill -STOP "$fs2_pid"; else kill -9 "$fs2_pid"; wait "$fs2_pid" 2>/dev/null || true; fi
set +e
wait "$sipp_pid"
sipp_status=$?
set -e

head=$(head -1 "$OUT/stat.csv"); last=$(tail -1 "$OUT/stat.csv")
col() { awk -v h="$head" -v l="$last" -v k="$1" 'BEGIN{n=split(h,H,";");split(l,L,";");for(i=1;i<=n;i++)if(H[i]==k)print L[i]}'; }
# zap JSON timestamps: "ts":"2026-11-26T03:19:03.179Z"
ts_of() { sed -n 's/.*"ts":"\([^"]*\)".*/\1/p' | tail -1 | xargs -r -I{} date -d {} +%s.%N; }
t_down=$(grep '"node state changed"' "$OUT/sipbalancer.log" | grep '"node":"fs2"' | grep '"to":"down"' | head -1 | ts_of)
reason=$(grep '"node state changed"' "$OUT/sipbalancer.log" | grep '"node":"fs2"' | grep '"to":"down"' | head -1 | sed -n 's/.*"reason":"\([^"]*\)".*/\1/p')
t_last=$(grep '"request forwarded to node"' "$OUT/sipbalancer.log" | grep '"node":"fs2"' | grep '"method":"INVITE"' | ts_of)
ms() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.0f", (a-b)*1000}'; }

echo "mode: $MODE fs2 at t=${AT}s; sipp $CALLS calls at $RATE/s, exit status $sipp_status"
echo "SuccessfulCall(C): $(col 'SuccessfulCall(C)')   FailedCall(C): $(col 'FailedCall(C)')"
echo "fs2 marked down $(ms "$t_down" "$t_fail") ms after the failure (reason $reason)"
echo "last INVITE sent to fs2: $(ms "$t_last" "$t_fail") ms after the failure"
echo "output: $OUT"
