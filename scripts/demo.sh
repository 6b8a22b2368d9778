#!/usr/bin/env bash
# demo.sh: what `make demo` runs. A 3-node dev cluster on this machine,
# 100k realistic sessions in DETS and in a replicated Mnesia table, then
# migctl ping, counts, an export and a verified dry-run import. Everything
# it starts is stopped at the end, also on failure or Ctrl-C.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MIGCTL=$ROOT/bin/migctl
COUNT=${DEMO_COUNT:-100000}
OUT=$(mktemp -d)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
    step "stopping everything the demo started"
    scripts/devcluster.sh down || true
    rm -rf "$OUT"
}
trap cleanup EXIT

step "starting a 3-node dev cluster (Mnesia schema on all nodes, sessions in DETS)"
scripts/devcluster.sh up --nodes 3 --backend mnesia
# shellcheck disable=SC1091
source .devcluster/env
export MIGCTL_NODES MIGCTL_COOKIE_FILE ERL_EPMD_PORT
export MIGCTL_JOURNAL=$OUT/journal.db
# The DETS file the seeder writes on the first node (the application there
# runs the Mnesia backend, so migctl opens the file itself, read-only).
export MIGCTL_DETS_FILE=$ROOT/.devcluster/data/node1/dets/erlmcp_sessions.dets

step "seeding $COUNT sessions into DETS on the first node and into Mnesia"
scripts/devcluster.sh seed --store dets --count "$COUNT"
scripts/devcluster.sh seed --store mnesia --count "$COUNT"

step "migctl ping"
"$MIGCTL" ping

step "migctl sessions count (DETS, then Mnesia on every node)"
first=${MIGCTL_NODES%%,*}
"$MIGCTL" sessions count --store dets --node "$first"
for n in ${MIGCTL_NODES//,/ }; do
    "$MIGCTL" sessions count --store mnesia --node "$n" -o json
done

step "migctl sessions list --limit 3"
"$MIGCTL" sessions list --store dets --node "$first" --limit 3

step "migctl sessions export (DETS → file)"
"$MIGCTL" sessions export --store dets --node "$first" --out "$OUT/sessions.mexp"

step "migctl sessions import --dry-run (the file is verified in full; nothing is written)"
"$MIGCTL" sessions import --store mnesia --node "$first" --in "$OUT/sessions.mexp" --dry-run

step "a damaged file is refused before anything is written"
cp "$OUT/sessions.mexp" "$OUT/damaged.mexp"
printf 'X' | dd of="$OUT/damaged.mexp" bs=1 seek=4096 conv=notrunc status=none
if "$MIGCTL" sessions import --store mnesia --node "$first" --in "$OUT/damaged.mexp" --yes; then
    echo "demo: a damaged file was accepted" >&2; exit 1
else
    echo "(refused, exit code $?)"
fi
step "done"
