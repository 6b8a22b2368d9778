#!/usr/bin/env bash
# bench/scale/cleanup.sh (make bench-cleanup): what erlmcp's own cleanup of
# expired sessions costs the application when the DETS file is near its
# limit, and what the hybrid's cleaner (dets_cleanup_async_above) leaves of
# it. One node, BENCH_CLEANUP_SESSIONS sessions (default 1,400,000, ~1.8 GB)
# in its DETS file, BENCH_CLEANUP_RATE client ops/s (default 200) for
# BENCH_CLEANUP_SECS seconds (default 150: two cleanups at erlmcp's 60 s),
# twice:
#   erlmcp  the store runs erlmcp_session_dets (cleanup inside the store
#           server, as erlmcp's: the reference)
#   hybrid  the store runs the hybrid in phase0 over the same DETS backend
#           (the cleanup from the hybrid's own process above 100,000)
# and prints the clients' errors and their longest call for each.
#
# Everything it starts is stopped at exit (the dev cluster, by its pids).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
N=${BENCH_CLEANUP_SESSIONS:-1400000}
RATE=${BENCH_CLEANUP_RATE:-200}
SECS=${BENCH_CLEANUP_SECS:-150}
OUT=${BENCH_CLEANUP_DIR:-$(mktemp -d -t migctl-cleanup.XXXXXX)}
mkdir -p "$OUT"
DC="$ROOT/scripts/devcluster.sh"
UP=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$UP" ]; then DEVCLUSTER_STATE=$UP "$DC" down >/dev/null 2>&1 || true; fi
    if [ "${BENCH_CLEANUP_KEEP:-}" = 1 ]; then echo "work directory kept: $OUT"; else rm -rf "$OUT"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== bench-cleanup: $N sessions in one DETS file, $RATE ops/s for ${SECS}s; work dir $OUT"
for mode in erlmcp hybrid; do
    backend=dets
    [ "$mode" = hybrid ] && backend=hybrid
    export DEVCLUSTER_STATE=$OUT/$mode
    UP=$DEVCLUSTER_STATE
    "$DC" up --nodes 1 --backend "$backend" --phase phase0 --store-server erlmcp >"$OUT/$mode-up.log" 2>&1
    t0=$(date +%s)
    "$DC" seed --store dets --count "$N" >"$OUT/$mode-seed.log" 2>&1
    bytes=$(find "$DEVCLUSTER_STATE/data/node1" -name '*.dets' -printf '%s\n' | sort -n | tail -n 1)
    echo "$mode: seeded $N sessions in $(($(date +%s) - t0))s, DETS file $bytes bytes"
    "$DC" load start --rate "$RATE" >"$OUT/$mode-load.log" 2>&1
    sleep "$SECS"
    "$DC" load stop >"$OUT/$mode-stop.log" 2>&1 || true
    "$DC" load errors >"$OUT/$mode-errors.log" 2>&1 || true
    echo "BENCH cleanup store=$mode $(tr '\n' ' ' <"$OUT/$mode-stop.log")"
    sed 's/^/  /' "$OUT/$mode-errors.log"
    "$DC" down >/dev/null 2>&1 || true
    UP=""
done
