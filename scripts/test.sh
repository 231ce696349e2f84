#!/usr/bin/env bash
# Runs tapwatch's whole test suite on a fresh machine with only the Rust toolchain:
# installs the reference tools the tests compare against (tcpdump, tshark, pmacct as an
# independent sFlow exporter), iproute2 for
# the veth/namespace live-capture tests, Chromium for the status-page test, Debian's
# clickhouse-server (18.16) and zookeeper for the storage tests (each test starts its own
# private servers on loopback with scripts/clickhouse.sh and scripts/zookeeper.sh), and
# chdb-core (ClickHouse 26.x in-process) in a virtualenv, then runs `cargo test --workspace
# --no-fail-fast` (every test binary runs; the closing line sums them all).
#
# Live-capture tests need root (CAP_NET_ADMIN to create namespaces), the full-disk tests
# root to mount a small tmpfs; under CI=true they fail rather than skip when something they
# need is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v tcpdump >/dev/null 2>&1 || packages+=(tcpdump)
command -v tshark >/dev/null 2>&1 || packages+=(tshark)
command -v pmacctd >/dev/null 2>&1 || packages+=(pmacct)     # an independent sFlow exporter
command -v ip >/dev/null 2>&1 || packages+=(iproute2)
command -v gzip >/dev/null 2>&1 || packages+=(gzip)
command -v chromium >/dev/null 2>&1 || packages+=(chromium)   # the status page test renders it
command -v clickhouse-server >/dev/null 2>&1 || packages+=(clickhouse-server clickhouse-client)
[ -f /usr/share/java/zookeeper.jar ] || packages+=(zookeeper)   # ON CLUSTER DDL in the cluster test
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)
if [ ${#packages[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${packages[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
fi

# ClickHouse 26.x in-process for the SQL compatibility test.
venv=target/chdb-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import chdb' 2>/dev/null; then
  echo "scripts/test.sh: installing chdb-core into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q chdb-core
fi
export TAPWATCH_CHDB_PYTHON="$PWD/$venv/bin/python"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# --no-fail-fast: a failing test binary does not hide the results of the ones after it.
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one "test result" per binary).
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E 'test result:' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo
echo "summary: ${passed} passed, ${failed} failed"
exit "$status"
