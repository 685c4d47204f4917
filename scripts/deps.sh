#!/usr/bin/env bash
# Installs the system packages the tests and demo need when they are
# missing: redis-server (affinity store tests) and sip-tester (Debian's
# sipp, end-to-end tests). As root it installs them with apt-get; otherwise
# it prints the exact command to run and fails.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
if [ "${WITH_KAMAILIO:-0}" = 1 ]; then
	command -v kamailio >/dev/null 2>&1 || missing+=(kamailio)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "missing packages: ${missing[*]}" >&2
	echo "install them with:  sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi
echo "installing ${missing[*]} ..." >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/sipbalancer-apt.log 2>&1; then
	apt-get update >>/tmp/sipbalancer-apt.log 2>&1
	apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/sipbalancer-apt.log 2>&1 || {
		tail -20 /tmp/sipbalancer-apt.log >&2
		exit 1
	}
fi
# Debian starts the packaged redis-server service on install; the tests
# start their own servers on free ports and do not use it.
