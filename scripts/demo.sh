#!/usr/bin/env bash
# demo.sh: what `make demo` runs. The whole DETS -> Mnesia migration and a
# split-brain incident on one machine, in a few minutes:
#
#   a 3-node dev cluster running erlmcp's hybrid session backend (primary
#   DETS, secondary Mnesia, phase0), DEMO_COUNT (default 100,000) sessions
#   in the nodes' DETS files, live session traffic from the load generator
#   on every node (DEMO_RATE ops/s per node, default 500), then
#   schema / tables, phase1, backfill, a consistency check (all DETS files against Mnesia), phase2 at 10 %
#   and 100 %, phase3, archive of the DETS files, verify-replication; then
#   one node is cut off while traffic writes on both sides, the split is
#   detected (cluster status exit 7, cluster watch), planned and healed
#   with the traffic ON (the load generators are never paused or slowed
#   for the heal); the load generators check that every acknowledged
#   write is there, and a report gives sessions, operations acknowledged,
#   lost, wrong, resurrected (all 0), the longest a client waited for one
#   call to the store, how long the heal held the losers' writers (the
#   fence), and the time of each step.
#
# It exits non-zero when a step fails (the heal included), or an
# acknowledged write is lost, wrong or resurrected. Everything it
# starts (the dev cluster, a `migctl cluster watch`) is stopped at the
# end, also on failure or Ctrl-C; it refuses to run over a dev cluster it
# did not start. Every migctl call that changes something runs with --yes
# (no terminal in CI) and --reason demo. DEMO_KEEP_OUT=1 keeps the work
# directory (journal, archive, watch log).
#
# DEMO_PLOT=FILE.png also runs what an SRE would watch and draws it: the
# consistency monitor and the cluster watch serve metrics, a Prometheus
# (Debian's, on a free loopback port, its data in the work directory)
# scrapes them every 2 s, and at the end cmd/plotmetrics draws the
# dashboard's panels into FILE.png (and the recorded answers into
# FILE-data.json). DEMO_BACKFILL_RATE caps the backfill (sessions/s) so that
# its progress spans several scrapes. This is how docs/img/dashboard.png
# is made (see docs/metrics.md).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MIGCTL=$ROOT/bin/migctl
DC=$ROOT/scripts/devcluster.sh
COUNT=${DEMO_COUNT:-100000}
RATE=${DEMO_RATE:-500}
KEYSPACE=${DEMO_KEYSPACE:-3000}
OUT=$(mktemp -d -t migctl-demo.XXXXXX)
STARTED=0
WATCH_PID=""
PLOT=${DEMO_PLOT:-}
PROM_PID=""
MON_PID=""
PROM_URL=""
T_START=$(date +%s.%N)
STEPS=()
SECS=()
CUR=""
CUR_T0=""

# since T0: seconds from T0 (date +%s.%N) to now.
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
bold() { printf '\033[1m%s\033[0m\n' "$*"; }
# step NAME DESCRIPTION: starts timing NAME (for the report).
step() {
    end_step
    CUR=$1
    CUR_T0=$(date +%s.%N)
    printf '\n'
    bold "== $2"
}
end_step() {
    if [ -n "$CUR" ]; then
        STEPS+=("$CUR")
        SECS+=("$(since "$CUR_T0")")
        CUR=""
    fi
}
say() { printf '   %s\n' "$*"; }
# hold / resume: pause the load generators (rate 0) and start them again;
# the paused time is left out of the achieved rate. Used only for the
# quiescent snapshot of verify-replication, never around the heal.
PAUSED=0
HOLD_T0=""
hold() {
    "$DC" load rate --rate 0 >/dev/null
    HOLD_T0=$(date +%s.%N)
}
resume() {
    "$DC" load rate --rate "$RATE" >/dev/null
    PAUSED=$(awk -v p="$PAUSED" -v a="$HOLD_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", p + b - a }')
}
# mig ARGS...: prints and runs a migctl command.
mig() {
    printf '$ migctl %s\n' "$*"
    "$MIGCTL" "$@"
}
die() {
    echo "demo: FAILED: $*" >&2
    exit 1
}
# kv LINE KEY: the value of key=value in LINE.
kv() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }
# jnum FILE KEY: a top-level number of a JSON report.
jnum() { sed -n "s/^  \"$2\": \([0-9]*\),\{0,1\}$/\1/p" "$1" | head -n 1; }
# ms NS|US DIV: a duration in ms with one decimal ("-" if empty).
ms() { if [ -n "$1" ]; then awk -v v="$1" -v d="$2" 'BEGIN { printf "%.1f ms", v / d }'; else echo "-"; fi; }
# heal_steps FILE: the steps of a heal report (-o json), one a line:
# step, milliseconds, detail (or FAILED: error).
heal_steps() {
    awk '
        /^  "steps": \[/ { in_steps = 1; next }
        in_steps && /^  \]/ { in_steps = 0 }
        !in_steps { next }
        function str(line) { sub(/^ *"[a-z_]*": "/, "", line); sub(/",?$/, "", line); gsub(/\\"/, "\"", line); return line }
        /^      "step": /        { st = str($0) }
        /^      "detail": /      { de = str($0) }
        /^      "error": /       { de = "FAILED: " str($0) }
        /^      "duration_ns": / { d = $2; sub(/,$/, "", d); du = d / 1e6 }
        /^    }/ { printf "   %-16s %9.1f ms  %s\n", st, du, de; st = ""; de = ""; du = 0 }
    ' "$1"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    end_step
    for pid in "$WATCH_PID" "$MON_PID" "$PROM_PID"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [ "$STARTED" = 1 ]; then
        printf '\n'
        bold "== stopping everything the demo started"
        "$DC" down || true
    fi
    if [ "${DEMO_KEEP_OUT:-}" = 1 ]; then echo "work directory kept: $OUT"; else rm -rf "$OUT"; fi
    if [ "$rc" != 0 ]; then echo "demo: exit $rc" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$MIGCTL" ] || die "no $MIGCTL (run make build, or make demo)"
dcstatus=$("$DC" status 2>/dev/null || true)
if grep -q ' running$' <<<"$dcstatus"; then
    die "a dev cluster is already running here (scripts/devcluster.sh status); stop it first with scripts/devcluster.sh down"
fi

# ---------------------------------------------------------------- the cluster
step "cluster up" "a 3-node dev cluster: erlmcp's hybrid backend, primary DETS, secondary Mnesia, phase0"
STARTED=1
"$DC" up --nodes 3 --backend hybrid --phase phase0 --store-server erlmcp
# shellcheck disable=SC1091
source .devcluster/env
export MIGCTL_NODES MIGCTL_COOKIE_FILE ERL_EPMD_PORT
export MIGCTL_JOURNAL=$OUT/journal.db
IFS=, read -r -a NODES <<<"$MIGCTL_NODES"
LOSER=${NODES[2]}

if [ -n "$PLOT" ]; then
    command -v prometheus >/dev/null || die "DEMO_PLOT needs prometheus (make deps installs it)"
    free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
    MON_ADDR=127.0.0.1:$(free_port)
    WATCH_ADDR=127.0.0.1:$(free_port)
    PROM_ADDR=127.0.0.1:$(free_port)
    PROM_URL=http://$PROM_ADDR
    cat >"$OUT/prometheus.yml" <<YML
global: {scrape_interval: 2s, evaluation_interval: 2s}
rule_files: ['$ROOT/deploy/prometheus/migctl-consistency-rules.yml', '$ROOT/deploy/prometheus/migctl-cluster-rules.yml']
scrape_configs:
  - job_name: migctl-consistency
    static_configs: [{targets: ['$MON_ADDR']}]
  - job_name: migctl-cluster
    static_configs: [{targets: ['$WATCH_ADDR']}]
YML
    prometheus --config.file="$OUT/prometheus.yml" --storage.tsdb.path="$OUT/prometheus" \
        --web.listen-address="$PROM_ADDR" >"$OUT/prometheus.log" 2>&1 &
    PROM_PID=$!
    say "prometheus on $PROM_URL (pid $PROM_PID), scraping the monitor ($MON_ADDR) and the watch ($WATCH_ADDR)"
fi

step "seed DETS" "$COUNT sessions into the DETS files (split over the 3 nodes, as erlmcp with DETS serves each session on one node)"
"$DC" seed --store dets --count "$COUNT" --all-nodes
mig ping

step "traffic on" "live session traffic: the load generator on every node ($RATE ops/s each, store/fetch/delete 40/40/20), recording every acknowledged write"
"$DC" load start --rate "$RATE" --keyspace "$KEYSPACE"
LOAD_T0=$(date +%s.%N)
sleep 3
line=$("$DC" load stats | tail -n 1)
say "achieved so far: $(kv "$line" rate) ops/s over the 3 nodes ($(kv "$line" ops) operations, $(kv "$line" errors) errors)"

if [ -n "$PLOT" ]; then
    "$MIGCTL" consistency monitor --source dets --target mnesia --interval 10s --sample 2000 \
        --metrics-addr "$MON_ADDR" --log-level info >"$OUT/monitor.log" 2>&1 &
    MON_PID=$!
    "$MIGCTL" cluster watch --interval 1s --metrics-addr "$WATCH_ADDR" >"$OUT/watch.log" 2>&1 &
    WATCH_PID=$!
    say "consistency monitor (pid $MON_PID) and cluster watch (pid $WATCH_PID) running"
    sleep 12
fi

# ---------------------------------------------------------------- phase 0
step "schema, tables" "phase 0: Mnesia schema and tables (runbook: create_mnesia_schema.sh, create_mnesia_tables.sh)"
say "devcluster made the disc schema (the hybrid backend needs Mnesia running to start):"
say "migctl refuses to touch an existing schema, exit 5 expected"
rc=0
mig schema create --dry-run --reason demo || rc=$?
[ "$rc" = 5 ] || die "schema create on an existing schema: exit $rc, expected 5"
mig tables create --yes --reason demo

# ---------------------------------------------------------------- phase 1
step "phase1" "phase 1: dual-write (runbook: update_migration_phase.sh phase1)"
mig phase set phase1 --yes --reason demo

step "backfill" "backfill: every DETS session into Mnesia while the traffic runs (resumable, throttled)"
progress=()
[ -t 2 ] || progress=(--log-level info) # no terminal: progress as log lines
[ -z "${DEMO_BACKFILL_RATE:-}" ] || progress+=(--rate "$DEMO_BACKFILL_RATE")
mig backfill --from dets --to mnesia --yes --reason demo "${progress[@]}"
[ -z "$PLOT" ] || sleep 12 # a monitor check after the backfill

step "consistency check" "consistency check: the DETS files of all nodes, as one store, against Mnesia (full, checksums first)"
say "each node's DETS file holds the sessions it served; Mnesia holds them all: a DETS store named"
say "without --source-node is the union over --nodes. Exit 0 means they agree."
rc=0
"$MIGCTL" consistency check --source dets --target mnesia --full -o json >"$OUT/check.json" || rc=$?
say "processed $(jnum "$OUT/check.json" processed), matching $(jnum "$OUT/check.json" matching), mismatched $(jnum "$OUT/check.json" mismatched), missing in Mnesia $(jnum "$OUT/check.json" missing_in_target), extra in Mnesia $(jnum "$OUT/check.json" extra_in_target), bytes moved $(jnum "$OUT/check.json" bytes_moved)"
[ "$rc" = 0 ] || die "consistency check: exit $rc (see $OUT/check.json)"

# ---------------------------------------------------------------- phase 2
step "phase2 10%" "phase 2 at 10 %: dual-write, 10 % of the sessions read from Mnesia"
mig phase set phase2 --percent 10 --yes --reason demo
sleep 2
step "phase2 100%" "phase 2 at 100 %"
mig phase set phase2 --percent 100 --yes --reason demo
sleep 4

# ---------------------------------------------------------------- phase 3
step "phase3" "phase 3: Mnesia only (gate: read-error rate under 0.01 %)"
# The gate wants 10,000 reads from Mnesia by default; the demo's few
# seconds at 100 % give a few thousand: it says so, and lowers it.
mig phase set phase3 --yes --reason demo --min-reads 1000
mig phase show

step "archive dets" "archive the DETS files (tar.gz with a sha256 manifest, verified)"
mig archive dets --yes --reason demo --out "$OUT/dets_archive.tar.gz"

step "verify-replication" "verify replication (runbook: verify_mnesia_replication.sh)"
say "traffic held for a quiescent snapshot: each node's copy is checksummed at its own instant"
hold
sleep 1
scripts/verify_mnesia_replication.sh
resume

# ---------------------------------------------------------------- split brain
step "split (traffic on both sides)" "split brain: $LOSER cut off from the others while traffic writes on both sides"
if [ -z "$WATCH_PID" ]; then
    "$MIGCTL" cluster watch --interval 500ms >"$OUT/watch.log" 2>&1 &
    WATCH_PID=$!
fi
sleep 1
split=$("$DC" split --isolate 3)
echo "$split"
SPLIT_AT=$(sed -n 's/^split at=\(.*\)$/\1/p' <<<"$split")
[ -n "$SPLIT_AT" ] || die "no split time"
sleep 5
"$DC" load stats

step "detect" "detect: migctl cluster status (exit 7: partitioned) and cluster watch"
rc=0
mig cluster status || rc=$?
[ "$rc" = 7 ] || die "cluster status after the split: exit $rc, expected 7"
# The watch keeps running through the heal, as it would in production
# (other migctl processes leave the agent loaded while it is connected).
sleep 1
say "cluster watch (running since before the split) reported:"
{ grep -v 'msg="closing connections"' "$OUT/watch.log" || true; } | sed 's/^/   | /'

step "heal --plan" "plan: migctl cluster heal --plan (changes nothing)"
mig cluster heal --plan --split-at "$SPLIT_AT"

step "heal --execute" "heal: migctl cluster heal --execute --yes, the traffic ON on every node (keeps both sides' writes)"
say "the load generators keep running at $RATE ops/s per node through the heal, on the winners and the loser:"
say "the loser's writers wait only while it is fenced (until its Mnesia stops), then they write to the healed cluster"
line=$("$DC" load stats | tail -n 1)
WAIT_BEFORE_HEAL=$(kv "$line" max_latency_us)
printf '$ migctl cluster heal --execute --yes --reason demo --split-at %s -o json\n' "$SPLIT_AT"
HEAL_RC=0
"$MIGCTL" cluster heal --execute --yes --reason demo --split-at "$SPLIT_AT" -o json >"$OUT/heal.json" || HEAL_RC=$?
heal_steps "$OUT/heal.json"
HEAL_NS=$(jnum "$OUT/heal.json" duration_ns)
FENCE_NS=$(jnum "$OUT/heal.json" longest_fence_ns)
HEALED=$(sed -n 's/^  "healed": \([a-z]*\),\{0,1\}$/\1/p' "$OUT/heal.json" | head -n 1)
repaired=$(awk '/^  "repaired": \[/ { r = 1; next } r && /^  \]/ { r = 0 }
    r { sub(/^ *"/, ""); sub(/",?$/, ""); gsub(/\\"/, "\""); printf "%s%s", sep, $0; sep = "; " }' "$OUT/heal.json")
say "healed ${HEALED:-?} in $(ms "$HEAL_NS" 1e6), exit $HEAL_RC; losers' writers held (longest fence) $(ms "$FENCE_NS" 1e6)${repaired:+; replicas repaired after the reload: $repaired}"
line=$("$DC" load stats | tail -n 1)
say "traffic through the heal: $(kv "$line" ops) operations so far, $(kv "$line" errors) errors, $(kv "$line" skipped) skipped, longest client wait $(ms "$(kv "$line" max_latency_us)" 1e3) (before the heal $(ms "$WAIT_BEFORE_HEAL" 1e3))"
if [ "$(kv "$line" errors)" != 0 ]; then
    say "the clients' errors (not acknowledged, so nothing was promised), by reason:"
    "$DC" load errors | sed 's/^/   | /'
fi
if [ "$HEAL_RC" = 0 ]; then
    mig cluster status
else
    say "the heal FAILED (exit $HEAL_RC; report kept in $OUT/heal.json): checking the writes before stopping"
    DEMO_KEEP_OUT=1
    mig cluster status || true
fi
sleep 3
say "cluster watch, still running, saw the heal:"
{ grep -E ' (HEALTHY|DEGRADED|PARTITIONED) ' "$OUT/watch.log" || true; } | tail -n 4 | sed 's/^/   | /'

# ---------------------------------------------------------------- proof
step "stop traffic, verify writes" "stop the traffic; every acknowledged write must be in Mnesia"
stats=$("$DC" load stop)
LOAD_SECS=$(since "$LOAD_T0")
echo "$stats"
total=$(tail -n 1 <<<"$stats")
# exit 1 on any lost, wrong or resurrected session: judged below.
verify=$("$DC" load verify --store mnesia 2>&1) || true
echo "$verify"
vtotal=$(grep '^total ' <<<"$verify" || true)
[ -n "$vtotal" ] || die "load verify gave no total"

step "cluster check" "the cluster after the incident (runbook: verify_mnesia_cluster.sh)"
rc=0
scripts/verify_mnesia_cluster.sh || rc=$?
# after a failed heal, go on to the report (which fails the demo)
[ "$rc" = 0 ] || [ "$HEAL_RC" != 0 ] || die "verify_mnesia_cluster.sh: exit $rc"
mig sessions count --store mnesia
mig journal --limit 20
end_step

# ---------------------------------------------------------------- report
ops=$(kv "$total" ops)
errors=$(kv "$total" errors)
stores=$(kv "$total" stores)
deletes=$(kv "$total" deletes)
uncertain=$(kv "$total" uncertain)
acked=$((stores + deletes - uncertain))
lost=$(kv "$vtotal" lost)
wrong=$(kv "$vtotal" wrong_value)
resurrected=$(kv "$vtotal" resurrected)
# what the load generators' own fetches saw while running
rlost=$(kv "$total" read_lost)
rwrong=$(kv "$total" read_wrong)
rres=$(kv "$total" read_resurrected)
maxwait=$(kv "$total" max_latency_us)
rows=$("$MIGCTL" sessions count --store mnesia -o json | sed -n 's/.*"count": \([0-9]*\).*/\1/p' | head -n 1)
# The independent checker (package history): every operation every client
# made, with its call and return times, linearizable per session outside
# the split (the watch log gives the window), and after the heal each
# session holds what the heal's rule allows.
HIST_RC=0
HIST_OUT=$("$DC" load history --out "$OUT/history" >/dev/null 2>&1 &&
    go run ./history/cmd/historycheck -watch "$OUT/watch.log" -vis "$OUT/history/failed" "$OUT"/history/*.history.etf 2>&1) || HIST_RC=$?
printf '\n'
bold "== report"
printf '   %-42s %s\n' "sessions seeded in DETS" "$COUNT"
printf '   %-42s %s\n' "sessions in Mnesia at the end" "${rows:-?}"
printf '   %-42s %s\n' "session operations (3 load generators)" "$ops"
live=$(awk -v o="$ops" -v t="$LOAD_SECS" -v p="$PAUSED" 'BEGIN { printf "%.0f", o / (t - p) }')
printf '   %-42s %s ops/s over %.0f s (target %s; held %.0f s for verify-replication only, never for the heal)\n' \
    "traffic achieved while running" "$live" "$(awk -v t="$LOAD_SECS" -v p="$PAUSED" 'BEGIN { print t - p }')" "$((3 * RATE))" "$PAUSED"
printf '   %-42s %s (of %s issued; %s not issued: the store was slower than the rate)\n' \
    "operations acknowledged" "$((ops - errors))" "$ops" "$(kv "$total" skipped)"
printf '   %-42s %s (of %s stores and deletes issued)\n' "writes acknowledged" "$acked" "$((stores + deletes))"
printf '   %-42s %s\n' "ids checked (last acknowledged outcome)" "$(kv "$vtotal" checked)"
printf '   %-42s %s (seen by the live reads: %s)\n' "LOST" "$lost" "$rlost"
printf '   %-42s %s (seen by the live reads: %s)\n' "wrong value" "$wrong" "$rwrong"
printf '   %-42s %s (seen by the live reads: %s)\n' "deleted but back (resurrected)" "$resurrected" "$rres"
printf '   %-42s %s\n' "uncertain (store/delete not acknowledged)" "$uncertain"
printf '   %-42s %s\n' "application errors" "$errors"
printf '   %-42s %s\n' "history (independent checker)" "$(head -n 1 <<<"$HIST_OUT")"
printf '   %-42s %s (one call to the store, over the nodes; %s before the heal; a call that timed out counts as its 5 s)\n' \
    "longest client wait" "$(ms "$maxwait" 1e3)" "$(ms "$WAIT_BEFORE_HEAL" 1e3)"
printf '   %-42s %s\n' "heal --execute: exit, duration" "$HEAL_RC, $(ms "$HEAL_NS" 1e6)"
if [ -n "$FENCE_NS" ]; then
    printf '   %-42s %s\n' "heal: losers' writers held (longest fence)" "$(ms "$FENCE_NS" 1e6)"
fi
printf '\n   %-42s %8s\n' "STEP" "SECONDS"
for i in "${!STEPS[@]}"; do
    printf '   %-42s %8.1f\n' "${STEPS[$i]}" "${SECS[$i]}"
done
printf '   %-42s %8.1f\n' "total" "$(since "$T_START")"
if grep -q ' error=' <<<"$verify" || [ "$lost" != 0 ] || [ "$wrong" != 0 ] || [ "$resurrected" != 0 ]; then
    die "acknowledged writes lost ($lost), wrong ($wrong) or resurrected ($resurrected) (see load verify above)"
fi
if [ "$rlost" != 0 ] || [ "$rwrong" != 0 ] || [ "$rres" != 0 ]; then
    die "the live reads saw lost ($rlost), wrong ($rwrong) or resurrected ($rres) sessions (see load stats above)"
fi
[ "$HEAL_RC" = 0 ] || die "migctl cluster heal --execute: exit $HEAL_RC (see $OUT/heal.json)"
if [ "$HIST_RC" != 0 ]; then
    DEMO_KEEP_OUT=1
    head -n 80 <<<"$HIST_OUT" | sed 's/^/   | /'
    die "the history checker found problems (exit $HIST_RC; histories and visualizations in $OUT/history)"
fi
if [ -n "$PLOT" ]; then
    sleep 6 # the last scrapes
    secs=$(awk -v t="$(since "$T_START")" 'BEGIN { printf "%d", t + 30 }')
    bold "== the dashboard's panels from Prometheus: $PLOT"
    go run ./cmd/plotmetrics -prometheus "$PROM_URL" -since "${secs}s" -step 2s -save "${PLOT%.png}-data.json" -out "$PLOT"
fi
bold "== done: 0 acknowledged writes lost, wrong or resurrected; healed with the traffic on"
