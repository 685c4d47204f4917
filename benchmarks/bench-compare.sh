#!/usr/bin/env bash
# sipbalancer and Kamailio's dispatcher side by side, same machine, same run.
#
#   benchmarks/bench-compare.sh [--rates "500 1000 ..."] [--step-seconds N]
#                               [--repeats N] [--only ours|kamailio]
#   make bench-compare                      (the same, after make build)
#
# Both proxies stand in front of the same three sipp UAS backends
# (benchmarks/sipp/uas.xml on 127.0.4.1-3:5060, -aa so OPTIONS probes get a
# 200) and are driven, one after the other, by the same sipp caller
# (benchmarks/sipp/uac_reinvite.xml: INVITE, 200, ACK, re-INVITE, 200, ACK,
# BYE, 200). Kamailio 5.6 runs benchmarks/kamailio/dispatcher.cfg (tm, rr,
# dispatcher round-robin, OPTIONS probing, failure_route failover) on
# 127.0.0.1:5070; sipbalancer (bin/sipbalancer, policy weighted_round_robin,
# default health and failover, log.level warn) on 127.0.0.1:5080.
#
# Per proxy, per repeat: a warm-up, a fixed measurement at FIXED_RATE calls/s
# (the headline CPU figure), then stepped rates (RATES), each bounded in calls
# (rate x seconds) and time; stepping stops at the first failing rate. A step
# passes when sipp created every call at >= 95 % of the asked rate, every
# call ended, and failed calls are < 0.1 % of those created.
#
# Measured per step: CPU-seconds of the proxy (utime+stime from /proc, all of
# Kamailio's processes) per 1,000 completed calls; INVITE -> 200 p50/p90/p99 as
# seen by the caller (microseconds, from sipp's -trace_shortmsg timestamps;
# sipp's own -trace_rtt is kept too, but its clock moves in 4 ms steps);
# calls each backend received; CPU% of the proxy, the caller, the backends
# and the whole machine (the larger of /proc/stat and the processes' own
# times), UDP receive-buffer drops, the proxy's memory (PSS).
#
# Prints a table of medians over REPEATS, ratios ours/Kamailio last; raw
# files under benchmarks/out/compare-<timestamp>/. Settings (environment):
#   RATES="500 1000 1500 2000 2500 3000"  STEP_SECONDS=20  REPEATS=3  ONLY=
#   FIXED_RATE=500 FIXED_SECONDS=STEP_SECONDS  LAT_RATE=1000 (p50/p99 ratio)
#   HOLD_MS=1000 (sipp -d: pause between ACK and re-INVITE, and ACK and BYE;
#     with 0 a proxy's workers can forward the re-INVITE, sent 40 us after
#     the ACK, before it, and the sipp backend aborts the call)
#   RCVBUF=1048576 (UDP receive buffer of both proxies; "keep" leaves
#     net.core.rmem_max alone)  SETTLE=6 (s after each step, counted in CPU)
#   KAM_CHILDREN=4 KAM_SHM_MB=1024 KAM_PKG_MB=16  RECV_TIMEOUT_MS=10000
#   KAM_MEM=qm (Kamailio's memory manager, -x/-X: qm, fm or tlsf; qm is the
#     default of Debian's build, the Kamailio DESIGN.md measured; tlsf is
#     Kamailio tuned, about half the CPU per call: qm spends about half of
#     Kamailio's CPU in qm_malloc here)
#   KEEP_MSGS=0 (1 keeps sipp's per-message logs, ~1 KB per call)
#   SIPBALANCER_BIN=bin/sipbalancer (another build, e.g. of an older commit)
#   PROFILE_RATE= (a rate of RATES: during that step, a CPU profile of
#     sipbalancer from its admin API /debug/pprof, then allocs and heap; a
#     perf profile of Kamailio when perf is installed. That step's CPU
#     figures then include the profilers' cost.)
#   QUIET_PCT=30 QUIET_WAIT=300 (before each measurement, wait up to 300 s
#     for other processes to use < 30 % of a core; the machine is shared)
#   NOISY_PCT=40 RETRY_NOISY=2 (a run during which other processes used
#     more than 40 % of a core is discarded and run again, at most twice)
#
# Needs root the first time (apt-get install -y kamailio sip-tester) and,
# for RCVBUF, to set net.core.rmem_max (restored on exit). Traffic stays on
# 127.0.0.0/8.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

RATES=${RATES:-"500 1000 1500 2000 2500 3000"}
STEP_SECONDS=${STEP_SECONDS:-20}
REPEATS=${REPEATS:-3}
ONLY=${ONLY:-}
FIXED_RATE=${FIXED_RATE:-500}
FIXED_SECONDS=${FIXED_SECONDS:-}
LAT_RATE=${LAT_RATE:-1000}
HOLD_MS=${HOLD_MS:-1000}
RCVBUF=${RCVBUF:-1048576}
SETTLE=${SETTLE:-6}
KAM_CHILDREN=${KAM_CHILDREN:-4}
KAM_SHM_MB=${KAM_SHM_MB:-1024}
KAM_PKG_MB=${KAM_PKG_MB:-16}
KAM_MEM=${KAM_MEM:-qm}
RECV_TIMEOUT_MS=${RECV_TIMEOUT_MS:-10000}
WARMUP_CALLS=${WARMUP_CALLS:-500}
KEEP_MSGS=${KEEP_MSGS:-0}
SIPBALANCER_BIN=${SIPBALANCER_BIN:-bin/sipbalancer}
PROFILE_RATE=${PROFILE_RATE:-}
QUIET_PCT=${QUIET_PCT:-30}
QUIET_WAIT=${QUIET_WAIT:-300}
NOISY_PCT=${NOISY_PCT:-40}
RETRY_NOISY=${RETRY_NOISY:-2}

usage() { sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case $1 in
	--rates) RATES=$2; shift 2 ;;
	--step-seconds) STEP_SECONDS=$2; shift 2 ;;
	--repeats) REPEATS=$2; shift 2 ;;
	--only) ONLY=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
	esac
done
FIXED_SECONDS=${FIXED_SECONDS:-$STEP_SECONDS}
case $ONLY in "" | ours | kamailio) ;; *) echo "ONLY must be ours or kamailio" >&2; exit 2 ;; esac
for v in QUIET_PCT QUIET_WAIT NOISY_PCT RETRY_NOISY STEP_SECONDS REPEATS FIXED_RATE FIXED_SECONDS LAT_RATE HOLD_MS SETTLE KAM_CHILDREN KAM_SHM_MB KAM_PKG_MB RECV_TIMEOUT_MS WARMUP_CALLS; do
	case ${!v} in '' | *[!0-9]*) echo "$v must be a number" >&2; exit 2 ;; esac
done
for r in $RATES $PROFILE_RATE; do case $r in *[!0-9]*) echo "RATES: $r is not a number" >&2; exit 2 ;; esac; done

# ---------------------------------------------------------------- addresses
UAS_IPS=(127.0.4.1 127.0.4.2 127.0.4.3)
UAS_PORT=5060
KAM_ADDR=127.0.0.1:5070
OURS_ADDR=127.0.0.1:5080
OURS_ADMIN=127.0.0.1:5081
# The caller gets a new port for each run (5200-5299 in front of Kamailio,
# 5300-5399 in front of sipbalancer), so that late answers to a previous
# run (an overloaded proxy still working through its backlog) do not land
# in the next one.
KAM_UAC_BASE=5200
OURS_UAC_BASE=5300
UAC_SEQ=0

# ------------------------------------------------------------ dependencies
missing=()
command -v kamailio >/dev/null || missing+=(kamailio)
command -v sipp >/dev/null || missing+=(sip-tester)
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "installing: ${missing[*]}" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y kamailio sip-tester >&2 || {
			echo "apt-get install failed" >&2; exit 1; }
	else
		echo "missing: ${missing[*]}; run as root: apt-get install -y kamailio sip-tester" >&2
		exit 1
	fi
fi
for c in kamailio kamcmd sipp ss awk sort getconf; do
	command -v "$c" >/dev/null || { echo "missing command: $c" >&2; exit 1; }
done
[ -x "$SIPBALANCER_BIN" ] || { echo "$SIPBALANCER_BIN missing: make build" >&2; exit 1; }
SIPBALANCER_BIN=$(cd "$(dirname "$SIPBALANCER_BIN")" && pwd)/$(basename "$SIPBALANCER_BIN")
HZ=$(getconf CLK_TCK)
NCPU=$(getconf _NPROCESSORS_ONLN)

# Nothing else may hold our addresses.
busy=$(ss -Hlun 2>/dev/null | awk '{print $4}' | grep -E "^(127\.0\.4\.[123]:$UAS_PORT|$KAM_ADDR|$OURS_ADDR|127\.0\.0\.1:5[23][0-9][0-9])$" || true)
[ -z "$busy" ] || { echo "addresses in use: $busy" >&2; exit 1; }

OUT=$ROOT/benchmarks/out/compare-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT/backends"
RUNLOG=$OUT/run.log
STEPS=$OUT/steps.csv
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$RUNLOG" >&2; }

# ------------------------------------------------------- cleanup and sysctl
pids=()          # every process started and not yet waited for: killed on exit
rmem_saved=""
forget() { # PID: waited for, so its number may be reused: never kill it
	local x n=()
	for x in "${pids[@]}"; do [ "$x" != "$1" ] && n+=("$x"); done
	pids=("${n[@]}")
}
cleanup() {
	local p
	for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
	for _ in $(seq 1 50); do
		local alive=0
		for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && break
		sleep 0.2
	done
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
	wait 2>/dev/null
	if [ -n "$rmem_saved" ]; then
		sysctl -q -w net.core.rmem_max="$rmem_saved" >/dev/null 2>&1 &&
			echo "net.core.rmem_max restored to $rmem_saved" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rmem_now=$(cat /proc/sys/net/core/rmem_max)
if [ "$RCVBUF" != keep ]; then
	case $RCVBUF in '' | *[!0-9]*) echo "RCVBUF must be a number of bytes or keep" >&2; exit 2 ;; esac
	# Kamailio grows its buffer to -b; sipbalancer asks for 4 MiB and gets
	# min(4 MiB, rmem_max). rmem_max = RCVBUF gives both the same buffer.
	if [ "$rmem_now" != "$RCVBUF" ]; then
		if [ "$(id -u)" = 0 ] && sysctl -q -w net.core.rmem_max="$RCVBUF" >/dev/null 2>&1; then
			rmem_saved=$rmem_now
		else
			log "WARNING: cannot set net.core.rmem_max=$RCVBUF (now $rmem_now): the proxies' buffers may differ"
		fi
	fi
fi

# ------------------------------------------------------------ /proc readers
# Sum of utime+stime (ticks) over PIDs; a PID that is gone counts 0.
cpu_ticks() {
	local s=0 p line
	local -a f
	for p in "$@"; do
		[ -n "$p" ] || continue
		{ read -r line </proc/"$p"/stat; } 2>/dev/null || continue
		read -r -a f <<<"${line##*) }"
		s=$((s + f[11] + f[12]))
	done
	echo $s
}
# Machine: "busy total steal" ticks summed over all CPUs, from /proc/stat.
# Its columns are sampled at each timer tick: they miss processes that wake
# and sleep between ticks (at low load, our runs read up to 40 % below the
# processes' own times) but are right when the CPUs are rarely idle, which
# is what the saturation verdict needs.
machine_ticks() {
	local cpu u n sy id io irq sirq st rest
	read -r cpu u n sy id io irq sirq st rest </proc/stat
	echo "$((u + n + sy + irq + sirq)) $((u + n + sy + id + io + irq + sirq + st)) $st"
}
# Every process: "pid starttime session ticks" (utime+stime, measured by the
# scheduler). Two of these give the CPU that other processes used: those in
# both (same start time) by difference, new ones in full; processes that
# ended in between are missed (short compiler runs, for instance).
MYSID=$(awk '{ sub(/^.*\) /, ""); print $4 }' /proc/$$/stat)
proc_snapshot() { cat /proc/[0-9]*/stat 2>/dev/null | awk '{ p = $1; sub(/^.*\) /, ""); print p, $20, $4, $12 + $13 }' >"$1"; }
# other_ticks BEFORE AFTER PID...: ticks of processes that are not ours
# (not in the PID list, not in this script's session).
other_ticks() {
	local a=$1 b=$2
	shift 2
	awk -v mine=" $* " -v sid="$MYSID" 'FNR == NR { t[$1 " " $2] = $4; next }
		$3 == sid || index(mine, " " $1 " ") { next }
		{ k = $1 " " $2; d += (k in t) ? $4 - t[k] : $4 } END { print d + 0 }' "$a" "$b"
}
# System-wide UDP receive-buffer errors (datagrams dropped, full socket).
udp_rcvbuf_errors() { awk '/^Udp:/ { if (h) { print $6; exit } h = 1 }' /proc/net/snmp; }
# Drops counted on the UDP socket bound to 127.0.0.1:PORT or IP:PORT.
sock_drops() {
	local ip=${1%:*} port=${1##*:}
	local hex
	hex=$(printf '%02X%02X%02X%02X:%04X' $(echo "$ip" | awk -F. '{print $4, $3, $2, $1}') "$port")
	awk -v a="$hex" '$2 == a { d += $NF } END { print d + 0 }' /proc/net/udp
}

# Proportional set size of PIDs, MiB (Kamailio's shared memory counted once).
pss_mb() {
	local p s=0 v
	for p in "$@"; do
		v=$(awk '/^Pss:/ { print $2; exit }' /proc/"$p"/smaps_rollup 2>/dev/null)
		s=$((s + ${v:-0}))
	done
	echo $((s / 1024))
}

# ------------------------------------------------------------------ backends
uas_pids=()
uas_counts_file=()
start_backends() {
	local i ip
	for i in 0 1 2; do
		ip=${UAS_IPS[$i]}
		cp benchmarks/sipp/uas.xml "$OUT/backends/uas$((i + 1)).xml"
		# sipp writes its traces in its working directory.
		(cd "$OUT/backends" && exec sipp -sf "uas$((i + 1)).xml" -i "$ip" -p "$UAS_PORT" -aa -nostdin \
			-buff_size "${RCVBUF/keep/1048576}" -recv_timeout 30000 \
			-trace_stat -stf "uas$((i + 1))_stat.csv" -fd 1 -trace_counts \
			-trace_err -error_file "uas$((i + 1))_errors.log" \
			>"uas$((i + 1)).out" 2>&1) &
		uas_pids+=($!)
		pids+=($!)
	done
	for i in 0 1 2; do
		for _ in $(seq 1 50); do
			ss -Hlun | awk '{print $4}' | grep -qx "${UAS_IPS[$i]}:$UAS_PORT" && break
			sleep 0.1
		done
		kill -0 "${uas_pids[$i]}" 2>/dev/null || { log "backend ${UAS_IPS[$i]} did not start: $(cat "$OUT/backends/uas$((i + 1)).out")"; exit 1; }
		uas_counts_file[$i]=$OUT/backends/uas$((i + 1))_${uas_pids[$i]}_counts.csv
	done
	sleep 1.5 # first counts lines written
}
# "recv1 recv2 recv3 inv_retrans 200_retrans 200_timeouts": cumulative INVITEs
# that started a call on each backend, INVITE retransmissions the backends
# received, 200s they retransmitted (no ACK yet) and gave up on.
uas_counts() {
	local i f r1 r2 r3 a=0 b=0 c=0 line
	local -a v=()
	for i in 0 1 2; do
		f=${uas_counts_file[$i]}
		line=$(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) h[$i] = i; next }
			{ l = $0 } END { n = split(l, x, ";");
			  print x[h["0_INVITE_Recv"]] + 0, x[h["0_INVITE_Retrans"]] + x[h["5_INVITE_Retrans"]] + 0,
			        x[h["3_200_Retrans"]] + x[h["6_200_Retrans"]] + 0, x[h["3_200_Timeout"]] + x[h["6_200_Timeout"]] + 0 }' "$f" 2>/dev/null)
		read -r r1 r2 r3 r4 <<<"${line:-0 0 0 0}"
		v+=("$r1")
		a=$((a + r2)); b=$((b + r3)); c=$((c + r4))
	done
	echo "${v[0]} ${v[1]} ${v[2]} $a $b $c"
}
# Calls the backends gave up on after answering the INVITE: an ACK,
# re-INVITE or BYE that never came, or came out of order (from their
# -trace_counts files; their -trace_stat FailedCall also counts the OPTIONS
# probes, which start a "call" there that waits for an INVITE and times out).
uas_failed() {
	local i s=0 n
	for i in 0 1 2; do
		n=$(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i ~ /^(4_ACK|5_INVITE|7_ACK|8_BYE)_(Timeout|Unexp)$/) c[i] = 1; next }
			{ l = $0 } END { split(l, x, ";"); for (i in c) s += x[i]; print s + 0 }' "${uas_counts_file[$i]}" 2>/dev/null)
		s=$((s + ${n:-0}))
	done
	echo $s
}

# --------------------------------------------------------------------- proxies
PROXY_PIDS=()      # all processes of the running proxy
PROXY_MAIN=""
PROXY_ADDR=""
UAC_PORT=""
UAC_BASE=""
PDIR=""

http_get() { # host:port path
	local hp=$1
	exec 3<>"/dev/tcp/${hp%:*}/${hp##*:}" || return 1
	printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$hp" >&3
	sed -e '1,/^\r*$/d' <&3
	exec 3<&-
}
wait_udp() { # addr
	for _ in $(seq 1 100); do
		ss -Hlun | awk '{print $4}' | grep -qx "$1" && return 0
		sleep 0.1
	done
	return 1
}
rcvbuf_of() { ss -Hlumn "sport = :${1##*:}" | grep -o 'rb[0-9]*' | head -1 | tr -d rb; }

start_ours() {
	PROXY_ADDR=$OURS_ADDR
	UAC_BASE=$OURS_UAC_BASE
	cat >"$PDIR/sipbalancer.yaml" <<YAML
# Generated by bench-compare.sh: sipbalancer's defaults but for the listen
# address, the three backends and round-robin (Kamailio's algorithm 4).
sip:
  listen: ["udp://$OURS_ADDR"]
nodes:
  - { id: fs1, sip: "${UAS_IPS[0]}:$UAS_PORT" }
  - { id: fs2, sip: "${UAS_IPS[1]}:$UAS_PORT" }
  - { id: fs3, sip: "${UAS_IPS[2]}:$UAS_PORT" }
dispatcher:
  policy: weighted_round_robin
session:
  token_secret: benchmark-only
admin:
  listen: "$OURS_ADMIN"
log:
  level: warn
YAML
	"$SIPBALANCER_BIN" -config "$PDIR/sipbalancer.yaml" >"$PDIR/sipbalancer.out" 2>"$PDIR/sipbalancer.log" &
	PROXY_MAIN=$!
	pids+=($!)
	PROXY_PIDS=($PROXY_MAIN)
	wait_udp "$OURS_ADDR" || { log "sipbalancer did not listen: $(tail -5 "$PDIR/sipbalancer.log")"; exit 1; }
	local up=0
	for _ in $(seq 1 50); do
		up=$(http_get "$OURS_ADMIN" /api/v1/nodes 2>/dev/null | grep -c '"state": *"up"')
		[ "$up" -ge 3 ] && break
		sleep 0.2
	done
	[ "$up" -ge 3 ] || log "WARNING: sipbalancer reports $up of 3 nodes up"
	http_get "$OURS_ADMIN" /api/v1/nodes >"$PDIR/nodes-start.json" 2>/dev/null
}

start_kamailio() {
	PROXY_ADDR=$KAM_ADDR
	UAC_BASE=$KAM_UAC_BASE
	cp benchmarks/kamailio/dispatcher.cfg benchmarks/kamailio/dispatcher.list "$PDIR/"
	KAM_CTL=$PDIR/ctl.sock
	local b=()
	[ "$RCVBUF" != keep ] && b=(-b "$RCVBUF")
	kamailio -f "$PDIR/dispatcher.cfg" -DD -E -m "$KAM_SHM_MB" -M "$KAM_PKG_MB" -x "$KAM_MEM" -X "$KAM_MEM" "${b[@]}" \
		-A "LISTEN=udp:$KAM_ADDR" -A "DS_LIST=\"$PDIR/dispatcher.list\"" \
		-A "CTL_SOCK=\"unix:$KAM_CTL\"" -A "CHILDREN=$KAM_CHILDREN" \
		-w "$PDIR" >"$PDIR/kamailio.log" 2>&1 &
	PROXY_MAIN=$!
	pids+=($!)
	wait_udp "$KAM_ADDR" || { log "kamailio did not listen: $(tail -5 "$PDIR/kamailio.log")"; exit 1; }
	local active=0
	for _ in $(seq 1 50); do
		active=$(kamcmd -s "unix:$KAM_CTL" dispatcher.list 2>/dev/null | grep -c 'FLAGS: A')
		[ "$active" -ge 3 ] && break
		sleep 0.2
	done
	[ "$active" -ge 3 ] || log "WARNING: kamailio reports $active of 3 destinations active"
	sleep 2 # the first probes answered
	# Kamailio's processes: the main one and its children (fixed after start).
	PROXY_PIDS=($PROXY_MAIN $(pgrep -P "$PROXY_MAIN" | tr '\n' ' '))
	ps -o pid,ppid,comm,args -p "$(echo "${PROXY_PIDS[@]}" | tr ' ' ,)" >"$PDIR/processes.txt"
	kamcmd -s "unix:$KAM_CTL" core.psx >>"$PDIR/processes.txt" 2>/dev/null
}

proxy_snapshot() { # file: the proxy's own counters at this point
	if [ "$PROXY" = ours ]; then
		http_get "$OURS_ADMIN" /metrics >"$1" 2>/dev/null
	else
		{
			kamcmd -s "unix:$KAM_CTL" tm.stats
			kamcmd -s "unix:$KAM_CTL" core.shmmem
			kamcmd -s "unix:$KAM_CTL" dispatcher.list
			kamcmd -s "unix:$KAM_CTL" stats.get_statistics all
		} >"$1" 2>/dev/null
	fi
}

stop_proxy() {
	proxy_snapshot "$PDIR/final-counters.txt"
	kill "$PROXY_MAIN" 2>/dev/null
	for _ in $(seq 1 50); do kill -0 "$PROXY_MAIN" 2>/dev/null || break; sleep 0.2; done
	kill -KILL "$PROXY_MAIN" 2>/dev/null
	wait "$PROXY_MAIN" 2>/dev/null
	forget "$PROXY_MAIN"
	PROXY_MAIN=""
	PROXY_PIDS=()
}

# ----------------------------------------------------------------- sampler
# Once a second: time, proxy ticks, caller ticks, ticks of each backend.
# Ends when $1.stop exists or after $2 samples.
sampler() {
	local out=$1 max=$2 uacpidf=$3 uac=""
	local n=0
	while [ ! -e "$out.stop" ] && [ $n -lt "$max" ]; do
		[ -z "$uac" ] && [ -s "$uacpidf" ] && read -r uac <"$uacpidf"
		echo "$EPOCHREALTIME $(cpu_ticks "${PROXY_PIDS[@]}") $(cpu_ticks $uac) $(cpu_ticks "${uas_pids[0]}") $(cpu_ticks "${uas_pids[1]}") $(cpu_ticks "${uas_pids[2]}")" >>"$out"
		n=$((n + 1))
		sleep 1
	done
}

# ------------------------------------------------------------ other load
# The machine is shared: before each measurement, wait (at most QUIET_WAIT
# seconds) until what is not ours uses less than QUIET_PCT % of one core
# over a second. The figure is recorded with the step (other_before_pct).
OTHER_BEFORE=0
wait_quiet() {
	local waited=0 o o2 m0 m1 p0 p1 pp0
	while :; do
		proc_snapshot "$OUT/.q0"; m0=$(machine_ticks); p0=$(cpu_ticks "${PROXY_PIDS[@]}" "${uas_pids[@]}"); pp0=$(cpu_ticks "${PROXY_PIDS[@]}")
		sleep 1
		proc_snapshot "$OUT/.q1"; m1=$(machine_ticks); p1=$(cpu_ticks "${PROXY_PIDS[@]}" "${uas_pids[@]}")
		o=$(( $(other_ticks "$OUT/.q0" "$OUT/.q1" "${PROXY_PIDS[@]}" "${uas_pids[@]}") * 100 / HZ ))
		o2=$(( ( (${m1%% *} - ${m0%% *}) - (p1 - p0) ) * 100 / HZ ))
		[ "$o2" -gt "$o" ] && o=$o2
		# The proxy itself must be idle too (an overloaded one may still be
		# working through its backlog well after the caller stopped).
		local px
		px=$(( ($(cpu_ticks "${PROXY_PIDS[@]}") - pp0) * 100 / HZ ))
		if [ "$px" -ge 15 ] && [ $waited -lt "$QUIET_WAIT" ]; then
			[ $waited = 0 ] && log "  the proxy still uses ${px}% of a core with no calls offered: waiting"
			sleep 4; waited=$((waited + 5)); continue
		fi
		OTHER_BEFORE=$o
		[ "$o" -lt "$QUIET_PCT" ] && break
		if [ $waited -ge "$QUIET_WAIT" ]; then
			log "  WARNING: other processes still use ${o}% of a core after ${waited}s; measuring anyway"
			break
		fi
		[ $waited = 0 ] && log "  other processes use ${o}% of a core: waiting for a quieter machine (at most ${QUIET_WAIT}s)"
		sleep 4
		waited=$((waited + 5))
	done
	rm -f "$OUT/.q0" "$OUT/.q1"
}

# ------------------------------------------------------------------ one load
# run_load KIND RATE SECONDS: KIND is warmup, fixed or step. Appends a row
# to steps.csv (not for warmup) and sets LAST_PASS=1|0.
LAST_PASS=0
LAST_NOISY=0
LAST_OTHER=0
RETRY_LEFT=0
run_load() {
	local kind=$1 rate=$2 secs=$3
	local calls=$((rate * secs))
	[ "$kind" = warmup ] && calls=$WARMUP_CALLS
	local label=$kind-$rate
	local d=$PDIR/$label
	mkdir -p "$d"
	cp benchmarks/sipp/uac_reinvite.xml "$d/uac.xml"
	local lim=$((rate * 3)); [ $lim -lt 1000 ] && lim=1000

	UAC_PORT=$((UAC_BASE + UAC_SEQ % 100))
	UAC_SEQ=$((UAC_SEQ + 1))
	while ss -Hlun | awk '{print $4}' | grep -qx "127.0.0.1:$UAC_PORT"; do
		UAC_PORT=$((UAC_BASE + UAC_SEQ % 100)); UAC_SEQ=$((UAC_SEQ + 1))
	done
	[ "$kind" != warmup ] && wait_quiet
	# before
	local c0 m0 e0 pd0 ud0 uc0 uf0 b0
	c0=$(cpu_ticks "${PROXY_PIDS[@]}")
	b0=$(cpu_ticks "${uas_pids[@]}")
	m0=$(machine_ticks)
	proc_snapshot "$d/procs-before.txt"
	e0=$(udp_rcvbuf_errors)
	pd0=$(sock_drops "$PROXY_ADDR")
	ud0=$(sock_drops "127.0.0.1:$UAC_PORT")
	local bd0=0 bd2=0 ip
	for ip in "${UAS_IPS[@]}"; do bd0=$((bd0 + $(sock_drops "$ip:$UAS_PORT"))); done
	uc0=$(uas_counts)
	uf0=$(uas_failed)
	proxy_snapshot "$d/counters-before.txt"
	local t0=$EPOCHREALTIME

	: >"$d/samples.txt"
	rm -f "$d/samples.txt.stop" "$UACPID" "$UACCPU"
	sampler "$d/samples.txt" $((secs + RECV_TIMEOUT_MS / 1000 + 60 + SETTLE)) "$UACPID" &
	local spid=$!
	pids+=($spid)

	# The caller, wrapped so that its exact CPU time is read after it exits
	# (the wrapper's cutime/cstime) and its PID is known to the sampler.
	# -default_behaviors all,-abortunexp: an 18x that arrives after the 200
	# (the proxy forwarded the backend's 180 and 200, sent 1 ms apart, out of
	# order) would make sipp abort a call that succeeded; it is counted as
	# late_18x instead. A wrong final response still fails the call (it
	# never gets its 200: recv timeout).
	(cd "$d" && sh -c 'sipp "$@" & echo $! >"$UACPID"; wait $!; rc=$?
		read -r l </proc/$$/stat; set -- ${l##*) }; echo $((${14} + ${15})) >"$UACCPU"; exit $rc' sh \
		-sf uac.xml -i 127.0.0.1 -p "$UAC_PORT" -m "$calls" -r "$rate" -l "$lim" -d "$HOLD_MS" \
		-recv_timeout "$RECV_TIMEOUT_MS" -timeout $((secs + RECV_TIMEOUT_MS / 1000 + 30))s -timeout_error \
		-buff_size "${RCVBUF/keep/1048576}" \
		-trace_stat -stf uac_stat.csv -fd 1 -trace_rtt -trace_shortmsg \
		-trace_err -error_file uac_errors.log -trace_error_codes -default_behaviors all,-abortunexp \
		-nostdin "$PROXY_ADDR" >uac.out 2>&1) &
	local wpid=$! upid=""
	pids+=($wpid)
	for _ in $(seq 1 50); do [ -s "$UACPID" ] && break; sleep 0.1; done
	read -r upid <"$UACPID" 2>/dev/null && pids+=($upid)
	local prof_pid="" profiled=0
	if [ "$kind" = step ] && [ "$rate" = "$PROFILE_RATE" ] && [ "$secs" -gt 4 ]; then
		profiled=1
		if [ "$PROXY" = ours ] && command -v curl >/dev/null; then
			curl -s -o "$d/cpu.pprof" -w '%{http_code}\n' \
				"http://$OURS_ADMIN/debug/pprof/profile?seconds=$((secs - 2))" >"$d/cpu.pprof.status" 2>&1 &
			prof_pid=$!
		elif [ "$PROXY" = kamailio ] && command -v perf >/dev/null; then
			perf record -q -F 499 -g -o "$d/perf.data" -p "$(echo "${PROXY_PIDS[@]}" | tr ' ' ,)" \
				-- sleep $((secs - 2)) >"$d/perf.log" 2>&1 &
			prof_pid=$!
		fi
		[ -n "$prof_pid" ] && pids+=($prof_pid)
	fi
	wait $wpid
	local uac_rc=$?
	forget "$wpid"
	[ -n "$upid" ] && forget "$upid"
	if [ -n "$prof_pid" ]; then
		wait "$prof_pid" 2>/dev/null
		forget "$prof_pid"
		if [ "$PROXY" = ours ]; then
			curl -s -o "$d/allocs.pprof" "http://$OURS_ADMIN/debug/pprof/allocs" 2>/dev/null
			curl -s -o "$d/heap.pprof" "http://$OURS_ADMIN/debug/pprof/heap" 2>/dev/null
			curl -s -o "$d/goroutines.txt" "http://$OURS_ADMIN/debug/pprof/goroutine?debug=1" 2>/dev/null
			log "  profiles in $d: go tool pprof -top $SIPBALANCER_BIN $d/cpu.pprof (HTTP $(cat "$d/cpu.pprof.status"))"
		else
			perf report -i "$d/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null | head -80 >"$d/perf-top.txt"
			log "  perf profile of kamailio: perf report -i $d/perf.data (top in perf-top.txt)"
		fi
	fi
	local t1=$EPOCHREALTIME
	local c1 m1 b1 pss
	pss=$(pss_mb "${PROXY_PIDS[@]}")
	c1=$(cpu_ticks "${PROXY_PIDS[@]}")
	b1=$(cpu_ticks "${uas_pids[@]}")
	m1=$(machine_ticks)
	proc_snapshot "$d/procs-after.txt"
	local oth
	oth=$(other_ticks "$d/procs-before.txt" "$d/procs-after.txt" "${PROXY_PIDS[@]}" "${uas_pids[@]}" "$upid" "$wpid")
	sleep "$SETTLE"
	touch "$d/samples.txt.stop"
	wait $spid 2>/dev/null
	forget "$spid"
	local c2 e2 pd2 ud2 uc2 uf2
	c2=$(cpu_ticks "${PROXY_PIDS[@]}")
	e2=$(udp_rcvbuf_errors)
	pd2=$(sock_drops "$PROXY_ADDR")
	ud2=$(sock_drops "127.0.0.1:$UAC_PORT")
	for ip in "${UAS_IPS[@]}"; do bd2=$((bd2 + $(sock_drops "$ip:$UAS_PORT"))); done
	uc2=$(uas_counts)
	uf2=$(uas_failed)
	proxy_snapshot "$d/counters-after.txt"
	local uac_ticks
	uac_ticks=$(cat "$UACCPU" 2>/dev/null || echo 0)
	echo "$uac_rc" >"$d/uac.rc"

	# sipp writes its traces next to the scenario: uac_<pid>_*.
	local shortmsg rtt codes
	shortmsg=$(ls "$d"/uac_*_shortmessages.log 2>/dev/null | head -1)
	rtt=$(ls "$d"/uac_*_rtt.csv 2>/dev/null | head -1)
	codes=$(ls "$d"/uac_*_error_codes.log 2>/dev/null | head -1)

	# Per call (from the caller's timestamps, microseconds): first INVITE
	# sent, first 100, first 18x, first 2xx; INVITE retransmissions; every
	# response >= 300 by code.
	awk -F'\t' -v calls="$d/calls.csv" -v summ="$d/msgs.txt" '
		{ c = $5; t = $3 + 0 }
		$4 == "S" && $6 == "CSeq:1 INVITE" { if (c in inv) invre[c]++; else { inv[c] = t; if (first == "" || t < first) first = t; if (t > last) last = t } ; next }
		$4 == "R" { split($7, w, " "); code = w[2] + 0
			if (code >= 300) bad[code]++
			if ($6 != "CSeq:1 INVITE") next
			if (code == 100 && !(c in t1)) t1[c] = t
			if (code >= 180 && code < 190) { if (c in t2) late18++; else if (!(c in t18)) t18[c] = t }
			if (code >= 200 && code < 300 && !(c in t2)) t2[c] = t }
		END {
			print "call_id;invite_s;to100_us;to18x_us;to200_us;invite_retrans" > calls
			n18 = 0; n2 = 0; nre = 0
			for (c in inv) {
				printf "%s;%.6f;%s;%s;%s;%d\n", c, inv[c],
					(c in t1) ? sprintf("%.0f", (t1[c] - inv[c]) * 1e6) : "",
					(c in t18) ? sprintf("%.0f", (t18[c] - inv[c]) * 1e6) : "",
					(c in t2) ? sprintf("%.0f", (t2[c] - inv[c]) * 1e6) : "", invre[c] + 0 > calls
				if (c in t2) { n2++; if (!(c in t18)) no18++ }
				if (invre[c] > 0) nre++
			}
			codes = ""
			for (k in bad) codes = codes (codes == "" ? "" : " ") k "x" bad[k]
			printf "invites=%d answered=%d answered_without_18x=%d late_18x=%d calls_with_invite_retrans=%d first=%.6f last=%.6f codes=%s\n",
				length(inv), n2, no18 + 0, late18 + 0, nre, first, last, (codes == "" ? "none" : codes) > summ
		}' "${shortmsg:-/dev/null}"
	if [ "$KEEP_MSGS" = 1 ]; then gzip -q "$shortmsg" 2>/dev/null; else rm -f "$shortmsg"; fi
	gzip -q -f "$d/calls.csv" 2>/dev/null
	# An overloaded run logs every unexpected answer: up to 100 MB.
	[ -n "$(find "$d/uac_errors.log" -size +1M 2>/dev/null)" ] && gzip -q -f "$d/uac_errors.log"

	# Percentiles (nearest rank) of a column of calls.csv.gz, microseconds.
	pct() {
		gzip -dc "$d/calls.csv.gz" | awk -F';' -v k="$1" 'NR > 1 && $k != "" { print $k }' | sort -n |
			awk '{ v[NR] = $1 } END { if (NR == 0) { print "- - - -"; exit }
				i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++; i90 = int(NR * 0.90); if (i90 < NR * 0.90) i90++
				i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++
				print v[i50], v[i90], v[i99], v[NR] }'
	}
	local p200 p100 prtt
	p200=$(pct 5)
	p100=$(pct 3)
	# sipp's own RTT (ms, in steps of its 4 ms clock): p50 p99.
	prtt=$(awk -F';' 'NR > 1 { print $2 }' "${rtt:-/dev/null}" 2>/dev/null | sort -n |
		awk '{ v[NR] = $1 } END { if (NR == 0) { print "- -"; exit } a = int(NR * .5); if (a < 1) a = 1; b = int(NR * .99); if (b < NR * .99) b++; print v[a], v[b] }')

	# sipp's counters (cumulative columns of the last line).
	local stat
	stat=$(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) h[$i] = i; next } { l = $0 }
		END { split(l, x, ";");
			print x[h["TotalCallCreated"]] + 0, x[h["SuccessfulCall(C)"]] + 0, x[h["FailedCall(C)"]] + 0,
				x[h["Retransmissions(C)"]] + 0, x[h["FailedTimeoutOnRecv(C)"]] + 0, x[h["FailedUnexpectedMessage(C)"]] + 0,
				x[h["FailedMaxUDPRetrans(C)"]] + 0, x[h["DeadCallMsgs(C)"]] + x[h["OutOfCallMsgs(C)"]] + 0 }' "$d/uac_stat.csv" 2>/dev/null)
	local created ok failed retrans f_timeout f_unexp f_maxretr stray
	read -r created ok failed retrans f_timeout f_unexp f_maxretr stray <<<"${stat:-0 0 0 0 0 0 0 0}"

	local first last
	first=$(sed -n 's/.* first=\([0-9.]*\).*/\1/p' "$d/msgs.txt")
	last=$(sed -n 's/.* last=\([0-9.]*\).*/\1/p' "$d/msgs.txt")
	local msgs
	msgs=$(cat "$d/msgs.txt")

	# CPU% of one core over the caller's lifetime (t0..t1, exact: /proc
	# before and after), and the busiest second of the proxy and the caller
	# (from the 1 s samples while the calls were being created).
	local cpu
	cpu=$(awk -v t0="$t0" -v t1="$t1" -v secs="$secs" -v hz="$HZ" -v ncpu="$NCPU" \
		-v c0="$c0" -v c1="$c1" -v u="$(cat "$UACCPU" 2>/dev/null || echo 0)" -v b0="$b0" -v b1="$b1" \
		-v m0="$m0" -v m1="$m1" -v oth="$oth" '
		{ t[NR] = $1; p[NR] = $2; uu[NR] = $3 }
		END {
			w = t1 - t0; if (w <= 0) w = 1
			split(m0, a, " "); split(m1, b, " "); mt = b[2] - a[2]; if (mt <= 0) mt = 1
			pk = 0; upk = 0
			for (i = 2; i <= NR; i++) { if (t[i] > t0 + secs + 1) break; dt = t[i] - t[i-1]; if (dt <= 0) continue
				x = (p[i] - p[i-1]) / hz / dt * 100; if (x > pk) pk = x
				y = (uu[i] - uu[i-1]) / hz / dt * 100; if (y > upk) upk = y }
			ours = (c1 - c0 + u + b1 - b0) / hz / w * 100; o = oth / hz / w * 100
			ms = (b[1] - a[1]) / mt * ncpu * 100
			# other processes: the larger of their own times (misses the
			# short-lived) and /proc/stat less ours (reads low at low load)
			if (ms - ours > o) o = ms - ours
			# machine: the larger of /proc/stat and the processes own times
			printf "%.0f %.0f %.0f %.0f %.0f %.0f %.0f %.1f %.0f %.0f\n",
				(c1 - c0) / hz / w * 100, pk, u / hz / w * 100, upk, (b1 - b0) / hz / w * 100,
				(ms > ours + o ? ms : ours + o), (b[3] - a[3]) / mt * ncpu * 100, w, o, ms }' "$d/samples.txt")
	local proxy_pct proxy_peak uac_pct uac_peak uas_pct mach_pct steal_pct win other_pct mach_stat
	read -r proxy_pct proxy_peak uac_pct uac_peak uas_pct mach_pct steal_pct win other_pct mach_stat <<<"$cpu"

	local proxy_cpu_s cpu_per_1k wall
	proxy_cpu_s=$(awk -v a="$c0" -v b="$c2" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz }')
	cpu_per_1k=$(awk -v a="$c0" -v b="$c2" -v hz="$HZ" -v n="$ok" 'BEGIN { if (n > 0) printf "%.3f", (b - a) / hz / n * 1000; else print "-" }')
	wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
	local uac_cpu_s
	uac_cpu_s=$(awk -v a="$uac_ticks" -v hz="$HZ" 'BEGIN { printf "%.2f", a / hz }')
	local achieved
	achieved=$(awk -v n="$created" -v f="$first" -v l="$last" 'BEGIN { if (n > 1 && l > f) printf "%.0f", (n - 1) / (l - f); else print 0 }')

	local r0 r1 r2 ir0 sr0 st0 q0 q1 q2 ir2 sr2 st2
	read -r q0 q1 q2 ir0 sr0 st0 <<<"$uc0"
	read -r r0 r1 r2 ir2 sr2 st2 <<<"$uc2"
	local b1=$((r0 - q0)) b2=$((r1 - q1)) b3=$((r2 - q2))
	local uas_inv_retr=$((ir2 - ir0)) uas_200_retr=$((sr2 - sr0)) uas_200_to=$((st2 - st0))
	local uasfail=$((uf2 - uf0))
	# Largest departure of a backend's share from a third, in % of a third.
	local spread
	spread=$(awk -v a="$b1" -v b="$b2" -v c="$b3" 'function abs(x) { return x < 0 ? -x : x }
		BEGIN { t = a + b + c; if (t == 0) { print "-"; exit } m = 0
			split(a " " b " " c, v, " "); for (i = 1; i <= 3; i++) { x = abs(v[i] / t * 3 - 1) * 100; if (x > m) m = x }
			printf "%.1f", m }')

	local failed_pct pass=1 why=""
	failed_pct=$(awk -v f="$failed" -v c="$created" 'BEGIN { if (c > 0) printf "%.3f", f / c * 100; else print "100" }')
	if [ "$created" -lt "$calls" ]; then pass=0; why="$why created $created of $calls;"; fi
	if [ $((ok + failed)) -lt "$created" ]; then pass=0; why="$why $((created - ok - failed)) calls never ended;"; fi
	if awk -v f="$failed" -v c="$created" 'BEGIN { exit !(c == 0 || f * 1000 >= c) }'; then pass=0; why="$why failed $failed_pct %;"; fi
	if awk -v a="$achieved" -v r="$rate" 'BEGIN { exit !(a < 0.95 * r) }'; then pass=0; why="$why rate $achieved/s of $rate;"; fi
	LAST_PASS=$pass

	why=${why//;/,}
	local e_delta=$((e2 - e0)) pdrops=$((pd2 - pd0)) udrops=$((ud2 - ud0)) bdrops=$((bd2 - bd0))
	local p50 p90 p99 pmax a50 a90 a99 amax r50 r99
	read -r p50 p90 p99 pmax <<<"$p200"
	read -r a50 a90 a99 amax <<<"$p100"
	read -r r50 r99 <<<"$prtt"
	local codes_s
	codes_s=$(sed -n 's/.* codes=\(.*\)$/\1/p' "$d/msgs.txt")
	local no18 late18 invre_calls
	no18=$(sed -n 's/.*answered_without_18x=\([0-9]*\).*/\1/p' "$d/msgs.txt")
	late18=$(sed -n 's/.*late_18x=\([0-9]*\).*/\1/p' "$d/msgs.txt")
	invre_calls=$(sed -n 's/.*calls_with_invite_retrans=\([0-9]*\).*/\1/p' "$d/msgs.txt")

	{
		echo "kind=$kind rate=$rate seconds=$secs calls=$calls limit=$lim hold_ms=$HOLD_MS caller=127.0.0.1:$UAC_PORT"
		echo "uac_exit=$uac_rc wall_s=$wall created=$created successful=$ok failed=$failed failed_pct=$failed_pct achieved_rate=$achieved"
		echo "failed_timeout=$f_timeout failed_unexpected=$f_unexp failed_max_udp_retrans=$f_maxretr uac_retransmissions=$retrans stray_msgs=$stray"
		echo "$msgs"
		echo "invite_to_200_us p50=$p50 p90=$p90 p99=$p99 max=$pmax"
		echo "invite_to_100_us p50=$a50 p90=$a90 p99=$a99 max=$amax"
		echo "sipp_rtt_ms(4ms clock) p50=$r50 p99=$r99"
		echo "proxy_cpu_s=$proxy_cpu_s (load + ${SETTLE}s settle) cpu_s_per_1k_calls=$cpu_per_1k"
		echo "other_processes_before_pct=$OTHER_BEFORE"
		echo "cpu_pct_of_one_core caller_lifetime_s=$win proxy=$proxy_pct proxy_peak=$proxy_peak uac=$uac_pct uac_peak=$uac_peak backends=$uas_pct machine=$mach_pct steal=$steal_pct other_processes=$other_pct machine_proc_stat=$mach_stat (machine max $((NCPU * 100)))"
		echo "uac_cpu_s=$uac_cpu_s"
		echo "backends_calls=$b1/$b2/$b3 (largest departure from a third: $spread %) backend_invite_retrans=$uas_inv_retr backend_200_retrans=$uas_200_retr backend_200_timeouts=$uas_200_to backend_failed_calls=$uasfail"
		echo "udp_rcvbuf_errors(system)=$e_delta proxy_socket_drops=$pdrops uac_socket_drops=$udrops backend_socket_drops=$bdrops"
		echo "proxy_pss_mib_at_end_of_load=$pss"
		echo "pass=$pass ${why:+($why)}"
		[ "$profiled" = 1 ] && echo "profiled=1 (a profiler ran during this step: its CPU is in the proxy's figures)"
	} >"$d/result.txt"

	[ "$kind" = warmup ] && { log "  warm-up: $created calls, $failed failed"; LAST_NOISY=0; return; }
	LAST_OTHER=$other_pct
	LAST_NOISY=$([ "${other_pct:-0}" -gt "$NOISY_PCT" ] 2>/dev/null && echo 1 || echo 0)
	if [ "$LAST_NOISY" = 1 ] && [ "$RETRY_LEFT" = 1 ]; then
		log "  (discarded) $kind $rate/s: $([ $pass = 1 ] && echo PASS || echo FAIL), failed $failed, cpu/1k $cpu_per_1k, other processes ${other_pct}%"
		return
	fi
	echo "$REP;$PROXY;$kind;$rate;$secs;$created;$ok;$failed;$failed_pct;$achieved;$pass;$uac_rc;$cpu_per_1k;$proxy_cpu_s;$proxy_pct;$proxy_peak;$uac_pct;$uac_peak;$uas_pct;$mach_pct;$steal_pct;$other_pct;$OTHER_BEFORE;$p50;$p90;$p99;$pmax;$a50;$a99;$r50;$r99;$b1;$b2;$b3;$spread;$retrans;$invre_calls;$uas_inv_retr;$uas_200_retr;$uasfail;$no18;$late18;$e_delta;$pdrops;$udrops;$bdrops;$pss;$codes_s;$why" >>"$STEPS"
	log "  $(printf '%-5s %5s/s  %s  created %6s failed %4s (%s%%)  rate %5s/s  cpu/1k %6s  proxy %4s%% (peak %4s)  uac %3s%%  machine %3s%%  p50/p99 %s/%s us  drops %s (system %s)' \
		"$kind" "$rate" "$([ $pass = 1 ] && echo PASS || echo FAIL)" "$created" "$failed" "$failed_pct" "$achieved" "$cpu_per_1k" "$proxy_pct" "$proxy_peak" "$uac_pct" "$mach_pct" "$p50" "$p99" "$pdrops" "$e_delta")"
}
export UACPID UACCPU

run_proxy() { # ours|kamailio
	PROXY=$1
	PDIR=$OUT/r$REP-$PROXY
	mkdir -p "$PDIR"
	log "repeat $REP: $PROXY"
	if [ "$PROXY" = ours ]; then start_ours; else start_kamailio; fi
	echo "udp_rcvbuf_bytes(kernel, doubled)=$(rcvbuf_of "$PROXY_ADDR") processes=${#PROXY_PIDS[@]}" >"$PDIR/socket.txt"
	ss -Hlumn "sport = :${PROXY_ADDR##*:}" >>"$PDIR/socket.txt"
	run_with_paths warmup $((WARMUP_CALLS / 2 > 0 ? WARMUP_CALLS / 2 : 1)) 2
	run_with_paths fixed "$FIXED_RATE" "$FIXED_SECONDS"
	local highest=0
	for r in $RATES; do
		run_with_paths step "$r" "$STEP_SECONDS"
		[ "$LAST_PASS" = 1 ] || break
		highest=$r
	done
	log "  $PROXY highest passing rate: $highest"
	stop_proxy
}
run_with_paths() { # sets the wrapper's output files, then run_load; a step
	# disturbed by other processes is measured again (RETRY_NOISY times)
	local d=$PDIR/$1-$2 try=0
	while :; do
		mkdir -p "$d"
		UACPID=$d/uac.pid
		UACCPU=$d/uac.cpu
		RETRY_LEFT=$((try < RETRY_NOISY ? 1 : 0))
		run_load "$@"
		[ "$LAST_NOISY" = 1 ] && [ "$RETRY_LEFT" = 1 ] || break
		try=$((try + 1))
		rm -rf "$d-noisy$try"
		mv "$d" "$d-noisy$try"
		log "  other processes used ${LAST_OTHER}% of a core during that run: measuring it again"
	done
}

# ------------------------------------------------------------------- report
summarize() {
	awk -F';' -v reps="$REPEATS" -v fixed="$FIXED_RATE" -v latr="$LAT_RATE" -v only="$ONLY" '
	function median(s,   n, a, i, j, t) { n = split(s, a, " "); if (n == 0) return "-"
		for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j+1] = a[j]; a[j+1] = t }
		return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
	function add(k, v) { if (v == "" || v == "-") return; vals[k] = vals[k] (vals[k] == "" ? "" : " ") v; cnt[k]++ }
	function m(k) { return (k in vals) ? median(vals[k]) : "-" }
	function fmt(v, f) { return (v == "-" || v == "") ? "-" : sprintf(f, v) }
	function ratio(a, b) { return (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) ? "-" : sprintf("%.2f", a / b) }
	NR == 1 { for (i = 1; i <= NF; i++) h[$i] = i; next }
	{
		rep = $h["repeat"]; p = $h["proxy"]; kind = $h["kind"]; rate = $h["rate"]
		if (kind == "fixed") { add(p SUBSEP "fixed_cpu", $h["cpu_s_per_1k"]); add(p SUBSEP "fixed_p50", $h["p50_us"]); add(p SUBSEP "fixed_p99", $h["p99_us"]) }
		if (kind != "step") next
		k = p SUBSEP rate; rates[rate] = 1; ran[p] = 1
		steps[k]++; if ($h["pass"] == 1) passes[k]++
		for (wf in want) add(k SUBSEP wf, $h[wf])
		if ($h["pass"] == 1 && rate + 0 > best[p, rep] + 0) { best[p, rep] = rate; bestcpu[p, rep] = $h["cpu_s_per_1k"] }
		if ($h["pass"] != 1) { sat[p, rep] = rate SUBSEP $0 }
		last[p, rep] = rate SUBSEP $0
		if (rate == latr) { add(p SUBSEP "lat_p50", $h["p50_us"]); add(p SUBSEP "lat_p99", $h["p99_us"]) }
		reps_seen[p, rep] = 1
	}
	BEGIN { split("failed_pct achieved_rate cpu_s_per_1k proxy_pct proxy_peak_pct uac_pct uac_peak_pct backends_pct machine_pct steal_pct other_pct backend_spread_pct p50_us p99_us to100_p99_us uac_retrans calls_invite_retrans udp_rcvbuf_errors proxy_sock_drops", w, " "); for (i in w) want[w[i]] = 1 }
	END {
		np = 0; if (only != "kamailio") P[++np] = "ours"; if (only != "ours") P[++np] = "kamailio"
		n = 0; for (r in rates) R[++n] = r + 0
		for (i = 2; i <= n; i++) { t = R[i]; for (j = i - 1; j >= 1 && R[j] > t; j--) R[j+1] = R[j]; R[j+1] = t }
		print ""
		print "== Per step: medians over the repeats that ran the step (CPU% of one core; the machine has 2) =="
		printf "%-8s %5s %6s %8s %7s %7s %7s %5s %5s %5s %5s %5s %5s %9s %9s %7s %6s %6s\n", "proxy", "rate", "pass", "failed%", "got/s", "cpu/1k", "proxy%", "peak%", "uac%", "uas%", "mach%", "oth%", "rr%", "p50_ms", "p99_ms", "100p99", "retr", "drops"
		for (pi = 1; pi <= np; pi++) { p = P[pi]
			for (i = 1; i <= n; i++) { k = p SUBSEP R[i]; if (!(k in steps)) continue
				printf "%-8s %5d %6s %8s %7s %7s %7s %5s %5s %5s %5s %5s %5s %9s %9s %7s %6s %6s\n", p, R[i], (passes[k] + 0) "/" steps[k],
					fmt(m(k SUBSEP "failed_pct"), "%.3f"), m(k SUBSEP "achieved_rate"), fmt(m(k SUBSEP "cpu_s_per_1k"), "%.3f"),
					m(k SUBSEP "proxy_pct"), m(k SUBSEP "proxy_peak_pct"), m(k SUBSEP "uac_pct"), m(k SUBSEP "backends_pct"),
					m(k SUBSEP "machine_pct"), m(k SUBSEP "other_pct"), m(k SUBSEP "backend_spread_pct"), fmt(m(k SUBSEP "p50_us") / 1000, "%.3f"), fmt(m(k SUBSEP "p99_us") / 1000, "%.3f"),
					fmt(m(k SUBSEP "to100_p99_us") / 1000, "%.3f"), m(k SUBSEP "uac_retrans"), m(k SUBSEP "proxy_sock_drops") } }
		print ""
		print "== What saturated (first failing step of each repeat, else the highest step run) =="
		for (pi = 1; pi <= np; pi++) { p = P[pi]
			for (rep = 1; rep <= reps; rep++) { if (!((p, rep) in reps_seen)) continue
				s = ((p, rep) in sat) ? sat[p, rep] : last[p, rep]; split(s, q, SUBSEP); split(q[2], f, ";")
				pp = f[h["proxy_pct"]]; pk = f[h["proxy_peak_pct"]]; u = f[h["uac_pct"]]; up = f[h["uac_peak_pct"]]; mc = f[h["machine_pct"]]
				v = "nothing at 100 %: failures without a saturated CPU (see drops, retransmissions)"
				if (mc + 0 >= 180) v = "the machine (both cores busy)"
				else if (up + 0 >= 95 || u + 0 >= 90) v = "the sipp caller (one core)"
				else if (pp + 0 >= 180) v = "the proxy (both cores)"
				else if (pp + 0 >= 90 && p == "ours") v = "the proxy (about one core busy; check GOMAXPROCS use)"
				printf "%-8s repeat %d at %5d/s (%s): proxy %s%% (peak %s%%), caller %s%% (peak %s%%), backends %s%%, machine %s%%, other processes %s%%, drops at the proxy socket %s (system-wide %s) -> %s\n",
					p, rep, q[1], (((p, rep) in sat) ? "failed: " f[h["why"]] : "passed"), pp, pk, u, up, f[h["backends_pct"]], mc, f[h["other_pct"]], f[h["proxy_sock_drops"]], f[h["udp_rcvbuf_errors"]], v } }
		for (pi = 1; pi <= np; pi++) { p = P[pi]; s = ""
			for (rep = 1; rep <= reps; rep++) if ((p, rep) in reps_seen) { s = s " " (best[p, rep] + 0); if ((p, rep) in bestcpu) add(p SUBSEP "best_cpu", bestcpu[p, rep]) }
			hr[p] = median(s); hrs[p] = s }
		print ""
		printf "== Headline: medians over %d repeat(s); ratios ours/kamailio last ==\n", reps
		printf "%-46s %12s %12s %14s\n", "figure", "ours", "kamailio", "ours/kamailio"
		line("CPU-s per 1,000 calls at " fixed "/s (fixed run)", m("ours" SUBSEP "fixed_cpu"), m("kamailio" SUBSEP "fixed_cpu"), "%.3f")
		line("highest passing rate, calls/s (per repeat:" hrs["ours"] " |" hrs["kamailio"] ")", ("ours" in hr) ? hr["ours"] : "-", ("kamailio" in hr) ? hr["kamailio"] : "-", "%.0f")
		line("CPU-s per 1,000 calls at the highest passing rate", m("ours" SUBSEP "best_cpu"), m("kamailio" SUBSEP "best_cpu"), "%.3f")
		line("INVITE->200 p50 at " latr "/s, ms", ms(m("ours" SUBSEP "lat_p50")), ms(m("kamailio" SUBSEP "lat_p50")), "%.3f")
		line("INVITE->200 p99 at " latr "/s, ms", ms(m("ours" SUBSEP "lat_p99")), ms(m("kamailio" SUBSEP "lat_p99")), "%.3f")
		line("INVITE->200 p50 at " fixed "/s (fixed run), ms", ms(m("ours" SUBSEP "fixed_p50")), ms(m("kamailio" SUBSEP "fixed_p50")), "%.3f")
		line("INVITE->200 p99 at " fixed "/s (fixed run), ms", ms(m("ours" SUBSEP "fixed_p99")), ms(m("kamailio" SUBSEP "fixed_p99")), "%.3f")
		a = ms(m("ours" SUBSEP "lat_p99")); b = ms(m("kamailio" SUBSEP "lat_p99"))
		if (a != "-" && b != "-") printf "p99 at %d/s: ours - kamailio = %+.3f ms (target: within 1 ms)\n", latr, a - b
		print ""
		print "Ratios ours/kamailio:"
		printf "  CPU per 1,000 calls at %d/s:  %s   (target <= 1.00; <= 1.5 if a wall inside sipgo remains)\n", fixed, ratio(m("ours" SUBSEP "fixed_cpu"), m("kamailio" SUBSEP "fixed_cpu"))
		printf "  highest passing rate:          %s   (target >= 1.00)\n", ratio(hr["ours"], hr["kamailio"])
		printf "  INVITE->200 p99 at %d/s:      %s\n", latr, ratio(m("ours" SUBSEP "lat_p99"), m("kamailio" SUBSEP "lat_p99"))
		printf "  INVITE->200 p50 at %d/s:      %s\n", latr, ratio(m("ours" SUBSEP "lat_p50"), m("kamailio" SUBSEP "lat_p50"))
	}
	function ms(v) { return (v == "-") ? "-" : v / 1000 }
	function line(name, a, b, f) { printf "%-46s %12s %12s %14s\n", name, fmt(a, f), fmt(b, f), ratio(a, b) }
	' "$STEPS"
}

# ---------------------------------------------------------------------- run
{
	echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ) host=$(hostname)"
	echo "cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) ncpu=$NCPU mem=$(awk '/MemTotal/ { print $2 " kB" }' /proc/meminfo)"
	echo "kernel=$(uname -r) loadavg_at_start=$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "kamailio=$(kamailio -v 2>/dev/null | head -1)"
	echo "sipp=$(sipp -v 2>/dev/null | grep -o 'SIPp v[^ ]*' | head -1)"
	echo "sipbalancer_bin=$SIPBALANCER_BIN version=$("$SIPBALANCER_BIN" -version 2>&1 | head -1) sha256=$(sha256sum "$SIPBALANCER_BIN" | cut -c1-16) tree=$(git -C "$ROOT" describe --always --dirty 2>/dev/null) $(go version 2>/dev/null)"
	echo "GOGC=${GOGC:-unset} GOMAXPROCS=${GOMAXPROCS:-unset} GOMEMLIMIT=${GOMEMLIMIT:-unset}"
	echo "net.core.rmem_max=$(cat /proc/sys/net/core/rmem_max) (was $rmem_now) RCVBUF=$RCVBUF"
	echo "RATES=\"$RATES\" STEP_SECONDS=$STEP_SECONDS REPEATS=$REPEATS ONLY=$ONLY FIXED_RATE=$FIXED_RATE FIXED_SECONDS=$FIXED_SECONDS LAT_RATE=$LAT_RATE HOLD_MS=$HOLD_MS SETTLE=$SETTLE KAM_CHILDREN=$KAM_CHILDREN KAM_SHM_MB=$KAM_SHM_MB KAM_PKG_MB=$KAM_PKG_MB KAM_MEM=$KAM_MEM RECV_TIMEOUT_MS=$RECV_TIMEOUT_MS WARMUP_CALLS=$WARMUP_CALLS QUIET_PCT=$QUIET_PCT QUIET_WAIT=$QUIET_WAIT NOISY_PCT=$NOISY_PCT RETRY_NOISY=$RETRY_NOISY"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" | tee -a "$RUNLOG" >&2
echo "repeat;proxy;kind;rate;seconds;created;successful;failed;failed_pct;achieved_rate;pass;uac_exit;cpu_s_per_1k;proxy_cpu_s;proxy_pct;proxy_peak_pct;uac_pct;uac_peak_pct;backends_pct;machine_pct;steal_pct;other_pct;other_before_pct;p50_us;p90_us;p99_us;max_us;to100_p50_us;to100_p99_us;sipp_rtt_p50_ms;sipp_rtt_p99_ms;backend1;backend2;backend3;backend_spread_pct;uac_retrans;calls_invite_retrans;backend_invite_retrans;backend_200_retrans;backend_failed;answered_without_18x;late_18x;udp_rcvbuf_errors;proxy_sock_drops;uac_sock_drops;backend_sock_drops;proxy_pss_mib;error_codes;why" >"$STEPS"

start_backends
for REP in $(seq 1 "$REPEATS"); do
	[ "$ONLY" != kamailio ] && run_proxy ours
	[ "$ONLY" != ours ] && run_proxy kamailio
done
for i in 1 2 3; do
	echo "backend uas$i: $(tail -1 "${uas_counts_file[$((i - 1))]}" 2>/dev/null | cut -c1-200)" >>"$RUNLOG"
done
summarize | tee "$OUT/summary.txt"
echo
echo "raw files: $OUT"
