#!/usr/bin/env bash
# sipp through sipbalancer to three emulated FreeSWITCH nodes.
#
#   benchmarks/run-sipp.sh [RATE] [SECONDS] [POLICY]
#
# Starts three fsemu nodes and the balancer on loopback, runs sipp's UAC
# (benchmarks/sipp/uac_reinvite.xml: INVITE, ACK, re-INVITE, ACK, BYE) at
# RATE calls/s for SECONDS, then prints sipp's own counts and the calls each
# node answered. Needs bin/ (make build) and sipp (make deps).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-100}
SECS=${2:-10}
POLICY=${3:-weighted_round_robin}
CALLS=$((RATE * SECS))
OUT=benchmarks/out/sipp-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
LB=127.0.0.1:26060

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM
wait_for() {
	for _ in $(seq 1 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
	echo "timed out waiting for $2 in $1" >&2; exit 1
}
http_get() {
	exec 3<>"/dev/tcp/127.0.0.1/$1"
	printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
	sed -e '1,/^\r*$/d' <&3
	exec 3<&-
}

for i in 1 2 3; do
	./bin/fsemu -id "fs$i" -listen "127.0.1.$i:5060" -control "127.0.0.1:2617$i" -log-level warn \
		>"$OUT/fs$i.out" 2>"$OUT/fs$i.log" &
	pids+=($!)
	wait_for "$OUT/fs$i.out" "127.0.1.$i:5060"
done
cat >"$OUT/sipbalancer.yaml" <<YAML
sip:
  listen: ["udp://$LB"]
nodes:
  - { id: fs1, sip: "127.0.1.1:5060" }
  - { id: fs2, sip: "127.0.1.2:5060" }
  - { id: fs3, sip: "127.0.1.3:5060" }
dispatcher:
  policy: $POLICY
session:
  token_secret: benchmark-only
admin:
  listen: ""
log:
  level: warn
YAML
./bin/sipbalancer -config "$OUT/sipbalancer.yaml" 2>"$OUT/sipbalancer.log" &
pids+=($!)
for _ in $(seq 1 100); do ss -lun 2>/dev/null | grep -q "${LB}" && break; sleep 0.1; done

echo "sipp: $CALLS calls at $RATE/s (policy $POLICY)"
set +e
sipp -sf benchmarks/sipp/uac_reinvite.xml -i 127.0.0.1 -p 26059 -m "$CALLS" -r "$RATE" -l $((RATE * 4)) \
	-recv_timeout 10000 -timeout $((SECS + 60))s -timeout_error -trace_stat -stf "$OUT/stat.csv" -fd 1 \
	-nostdin "$LB" >"$OUT/sipp.out" 2>&1
status=$?
set -e
head=$(head -1 "$OUT/stat.csv"); last=$(tail -1 "$OUT/stat.csv")
col() { awk -v h="$head" -v l="$last" -v k="$1" 'BEGIN{n=split(h,H,";");split(l,L,";");for(i=1;i<=n;i++)if(H[i]==k)print L[i]}'; }
echo "sipp exit status: $status"
echo "SuccessfulCall(C): $(col 'SuccessfulCall(C)')   FailedCall(C): $(col 'FailedCall(C)')   Retransmissions(C): $(col 'Retransmissions(C)')"
total=0
for i in 1 2 3; do
	n=$(http_get "2617$i" /stats | sed -n 's/.*"answered":\([0-9]*\).*/\1/p')
	eval "n$i=$n"
	total=$((total + n))
done
for i in 1 2 3; do
	eval "n=\$n$i"
	awk -v n="$n" -v t="$total" -v i="$i" 'BEGIN{printf "fs%s answered %d calls (%.1f%% of %d; a third is 33.3%%)\n", i, n, 100*n/t, t}'
done
echo "output: $OUT"
