#!/usr/bin/env bash
# Soak: calls at a moderate rate through sipbalancer to three fsemu nodes for
# MINUTES minutes; every minute the balancer's resident memory, Go heap,
# goroutines and open file descriptors are sampled from its own /metrics, so
# that growth shows. Bounded: RATE × MINUTES × 60 calls.
#
#   benchmarks/soak.sh [RATE] [MINUTES]      (defaults 200 calls/s, 10 min)
#
# Needs bin/ (make build).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-200}
MINUTES=${2:-10}
OUT=benchmarks/out/soak-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
LB=127.0.0.1:28060
ADMIN=127.0.0.1:28090

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
http_get() { # host:port path
	exec 3<>"/dev/tcp/${1%:*}/${1#*:}"
	printf 'GET %s HTTP/1.0\r\nHost: x\r\n\r\n' "$2" >&3
	sed -e '1,/^\r*$/d' <&3
	exec 3<&-
}
metric() { # name
	awk -v n="$1" '$1==n {print $2}' "$OUT/metrics.txt"
}

for i in 1 2 3; do
	./bin/fsemu -id "fs$i" -listen "127.0.7.$i:5060" -esl "127.0.7.$i:8021" -heartbeat 5s -log-level error \
		>"$OUT/fs$i.out" 2>"$OUT/fs$i.log" &
	pids+=($!)
	wait_for "$OUT/fs$i.out" "127.0.7.$i:5060"
done
cat >"$OUT/sipbalancer.yaml" <<YAML
sip:
  listen: ["udp://$LB"]
nodes:
  - { id: fs1, sip: "127.0.7.1:5060", esl: "127.0.7.1:8021" }
  - { id: fs2, sip: "127.0.7.2:5060", esl: "127.0.7.2:8021" }
  - { id: fs3, sip: "127.0.7.3:5060", esl: "127.0.7.3:8021" }
session:
  token_secret: soak-only
admin:
  listen: "$ADMIN"
log:
  level: info
YAML
./bin/sipbalancer -config "$OUT/sipbalancer.yaml" 2>"$OUT/sipbalancer.log" &
lb=$!
pids+=($lb)
wait_for "$OUT/sipbalancer.log" "admin API listening"

CALLS=$((RATE * MINUTES * 60))
./bin/sipcallgen -target "$LB" -calls "$CALLS" -rate "$RATE" -hold 1s -json >"$OUT/calls.json" 2>"$OUT/sipcallgen.log" &
gen=$!
pids+=($gen)

printf "%-6s %12s %12s %10s %6s %12s\n" minute rss_mib heap_mib goroutines fds active_calls | tee "$OUT/samples.txt"
for m in $(seq 0 "$MINUTES"); do
	http_get "$ADMIN" /metrics >"$OUT/metrics.txt"
	rss=$(metric process_resident_memory_bytes)
	heap=$(metric go_memstats_heap_inuse_bytes)
	gor=$(metric go_goroutines)
	fds=$(metric process_open_fds)
	act=$(awk '$1 ~ /^sipbalancer_node_active_calls/ {s+=$2} END {print s+0}' "$OUT/metrics.txt")
	awk -v m="$m" -v r="$rss" -v h="$heap" -v g="$gor" -v f="$fds" -v a="$act" \
		'BEGIN{printf "%-6d %12.1f %12.1f %10d %6d %12d\n", m, r/1048576, h/1048576, g, f, a}' | tee -a "$OUT/samples.txt"
	[ "$m" = "$MINUTES" ] && break
	sleep 60
done
set +e
wait "$gen"
gen_status=$?
set -e
echo "sipcallgen exit status $gen_status: $(cat "$OUT/calls.json" | tr -d '\n' | cut -c1-300)"
echo "output: $OUT"
