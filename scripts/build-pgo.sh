#!/usr/bin/env bash
# Builds tapwatch with profile-guided optimisation (PGO): an instrumented build replays
# every labelled scenario (two seeds, with their tenants files, one worker and two), LLVM's
# profile of that run guides a second, optimised build (branch layout, inlining, register
# use on the paths the profile found hot). Detection is the same code: the script replays
# the training captures again with the new binary and stops if one alert differs.
#
#   scripts/build-pgo.sh            # binary at target/pgo/release/tapwatch
#   scripts/build-pgo.sh DIR        # binary at DIR/release/tapwatch
#
# Needs llvm-profdata of the toolchain's own LLVM (`rustup component add llvm-tools`; the
# script runs that when the tool is missing). Takes about two release builds' time.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-target/pgo}
work=$(mktemp -d "${TMPDIR:-/tmp}/tapwatch-pgo.XXXXXX")
trap 'rm -rf "$work"' EXIT

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
    echo "build-pgo: installing llvm-tools for llvm-profdata" >&2
    rustup component add llvm-tools
fi
if [ ! -x "$profdata" ]; then
    echo "build-pgo: $profdata is missing; expected it from 'rustup component add llvm-tools'" >&2
    exit 1
fi

echo "build-pgo: 1/4 instrumented build (target dir $out-instrumented)" >&2
RUSTFLAGS="-Cprofile-generate=$work/raw" \
    cargo build --release -p tapwatch --target-dir "$out-instrumented"
instrumented="$out-instrumented/release/tapwatch"

# The scenario names, from the command's own list of possible values.
names=$("$instrumented" scenario --help |
    sed -n 's/.*\[possible values: \(.*\)\].*/\1/p' | head -n 1 | tr -d ',')
if [ -z "$names" ]; then
    echo "build-pgo: found no scenario names in 'tapwatch scenario --help'" >&2
    exit 1
fi

# replay BIN CAPTURE WORKERS ALERTS: one training (or checking) run.
replay() {
    "$1" replay "$2" --tenants "${2%.pcap}.tenants.toml" --workers "$3" --no-store \
        --progress never --format json --alerts-out "$4" > /dev/null
}

echo "build-pgo: 2/4 training replays" >&2
mkdir -p "$work/captures" "$work/alerts"
runs=0
for seed in 3 11; do
    for name in $names; do
        capture="$work/captures/$name-$seed.pcap"
        "$instrumented" scenario "$name" --seed "$seed" --out "$capture" > /dev/null
        for workers in 1 2; do
            replay "$instrumented" "$capture" "$workers" "$work/alerts/$name-$seed-$workers.jsonl"
            runs=$((runs + 1))
        done
    done
done
echo "build-pgo: $runs replays profiled" >&2

echo "build-pgo: 3/4 merging the profile" >&2
"$profdata" merge -o "$work/tapwatch.profdata" "$work/raw"

echo "build-pgo: 4/4 optimised build (target dir $out)" >&2
RUSTFLAGS="-Cprofile-use=$work/tapwatch.profdata" \
    cargo build --release -p tapwatch --target-dir "$out"
binary="$out/release/tapwatch"

# The same alerts as the instrumented build's, capture by capture.
for capture in "$work"/captures/*.pcap; do
    base=$(basename "$capture" .pcap)
    for workers in 1 2; do
        replay "$binary" "$capture" "$workers" "$work/check.jsonl"
        if ! cmp -s "$work/check.jsonl" "$work/alerts/$base-$workers.jsonl"; then
            echo "build-pgo: $binary raised other alerts than the instrumented build on $base (--workers $workers)" >&2
            exit 1
        fi
    done
done
echo "build-pgo: same alerts on every training capture; binary at $binary" >&2
