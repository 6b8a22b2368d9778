#!/usr/bin/env bash
# devcluster.sh: a local cluster of Erlang nodes running the erlmcp_fixture
# application (erlang/app), for migctl's demos and manual tests.
#
#   scripts/devcluster.sh up [--nodes N] [--backend ets|dets|mnesia|hybrid|hybrid-ets] [--phase P] [--store-server erlmcp|fixture] [--keep-data]
#   scripts/devcluster.sh restart NODE|K [--backend B] [--phase P] [--sys-config FILE]
#   scripts/devcluster.sh deploy --sys-config FILE
#   scripts/devcluster.sh seed --store ets|dets|mnesia --count N [--node NODE|--all-nodes] [--seed S]
#   scripts/devcluster.sh status
#   scripts/devcluster.sh load start [--rate R] [--keyspace K] | rate --rate R | stats | errors | stop | verify [--store S] | close
#   scripts/devcluster.sh split [--isolate NODE|K]
#   scripts/devcluster.sh reconnect
#   scripts/devcluster.sh down
#
# --backend hybrid runs erlmcp_session_backend_hybrid as the runbook's
# DETS -> Mnesia migration deploys it: primary_backend erlmcp_session_dets,
# secondary_backend erlmcp_session_mnesia, migration_phase P (default
# phase0), on a disc Mnesia schema over all nodes (made by `up`, like
# --backend mnesia; the application creates erlmcp_session and the phase
# table migctl_migration when it starts).
#
# --backend hybrid-ets is the runbook's ETS -> DETS step: primary
# erlmcp_session_ets, secondary erlmcp_session_dets (the phase lives in
# migctl_migration.dets next to the data; no Mnesia).
#
# restart stops one node (init:stop) and starts it again with the same
# name, cookie, epmd and data (DETS files, Mnesia directory; ETS is lost,
# as in production), then waits for its application: what `migctl verify
# persistence --restart-cmd` needs. --backend/--phase rewrite its config
# first; --sys-config FILE deploys the erlmcp_core block of a sys.config
# (the runbook's: session_backend, migration_phase, primary_backend, ...)
# on it, the node's own data paths and node list kept. deploy does that on
# every node whose configuration it changes, one node at a time (what
# scripts/deploy_config.sh does on the dev cluster).
#
# --store-server erlmcp (the default) runs the store server shaped like
# erlmcp's own, which drops every message it does not know; fixture runs
# the fixture's, which forwards them to the backend and can switch backends.
#
# seed --all-nodes splits COUNT over the nodes (each its own DETS file,
# seeds S, S+1, ... so the ids differ), in parallel.
#
# load: erlmcp_loadgen (erlang/app) on every node, each with its own ids;
# start takes --rate (ops/s per node, default 500) and --keyspace (ids per
# node, default 3000); rate changes it (0 pauses); stats/stop print one line per node and a total
# (max_latency_us: the longest single call to the store, the largest over
# the nodes in the total); errors groups each node's last errors by reason;
# verify checks every acknowledged write against --store (default mnesia:
# erlmcp_session; dets: erlmcp_sessions_dets; ets: erlmcp_sessions_ets) and
# exits 1 if one is lost, wrong or resurrected; history --out DIR saves
# each node's recorded history (every operation, for package history's
# checker); close drops the records.
# split cuts one node (default the last) from the others; the cut stays
# until `reconnect` (or migctl cluster heal) since nodes run with
# dist_auto_connect once. Mnesia stays split after a reconnect: that is
# the split brain `migctl cluster heal` repairs.
#
# Everything lives in .devcluster/ at the repository root (or in
# $DEVCLUSTER_STATE: a test runs its own dev cluster there):
#   cookie           random cookie, mode 0400 (also home/.erlang.cookie; nodes
#                    run with HOME=.devcluster/home so the cookie is never on
#                    a command line)
#   pids             what `up` started: "epmd PORT PID" and "node NAME PID"
#   env              `source` it: MIGCTL_NODES, MIGCTL_COOKIE_FILE, ERL_EPMD_PORT
#   logs/            one log per node, and epmd's
#   data/nodeK/      dets/ and mnesia/ of node K
#   nodeK.config     the node's sys.config
# The cluster has its own epmd on a free port (4370 and up), nodes are
# migctl_dev1..N@127.0.0.1 and listen on 127.0.0.1 only. `down` stops exactly
# the recorded processes. `up` starts from empty data unless --keep-data.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${DEVCLUSTER_STATE:-$ROOT/.devcluster}
EBIN=$ROOT/erlang/app/ebin
LIBEBIN=$ROOT/erlang/migctl_node/ebin
PIDS=$STATE/pids
# How long restart waits for a node and its application (ms): a node
# whose DETS file was not closed properly repairs it while its
# application starts: 85 s for the 1.68 GB file of the big run
# (docs/performance.md).
WAIT_MS=${DEVCLUSTER_WAIT_MS:-60000}
HOST=127.0.0.1
# DETS files made by the cluster get this many hash slots up front, which
# keeps big fills fast (8 MB of empty file at 1M); 0 uses DETS's default.
DETS_SLOTS=${DEVCLUSTER_DETS_SLOTS:-1000000}

die() { echo "devcluster: $*" >&2; exit 1; }
log() { echo "devcluster: $*"; }

usage() {
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# True if pid $1 is still the process we started: its command line must
# contain $2 (a node name, or "epmd"), so a recycled pid is never signalled.
is_ours() {
    local pid=$1 what=$2
    alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$what"
}

epmd_port() {
    [ -f "$PIDS" ] || return 1
    awk '$1 == "epmd" { print $2; exit }' "$PIDS"
}

recorded_nodes() {
    [ -f "$PIDS" ] || return 0
    awk '$1 == "node" { print $2 }' "$PIDS"
}

# Runs erlmcp_fixture_ctl on a short-lived hidden node.
ctl() {
    local port
    port=$(epmd_port) || die "no cluster recorded in $PIDS (run up first)"
    HOME=$STATE/home ERL_EPMD_PORT=$port erl -noshell -noinput -hidden \
        -name "devcluster_probe_$$_${RANDOM}@$HOST" \
        -kernel inet_dist_use_interface '{127,0,0,1}' \
        -pa "$EBIN" -eval 'erlmcp_fixture_ctl:main()' -extra "$@"
}

# Runs scripts/devcluster_ctl.erl (load generator, partitions) the same
# way; it is compiled into $STATE/ebin when missing or older than its source.
ctl2() {
    local port src=$ROOT/scripts/devcluster_ctl.erl
    port=$(epmd_port) || die "no cluster recorded in $PIDS (run up first)"
    if [ ! -f "$STATE/ebin/devcluster_ctl.beam" ] || [ "$src" -nt "$STATE/ebin/devcluster_ctl.beam" ]; then
        mkdir -p "$STATE/ebin"
        erlc -o "$STATE/ebin" "$src" || die "cannot compile $src"
    fi
    HOME=$STATE/home ERL_EPMD_PORT=$port erl -noshell -noinput -hidden \
        -name "devcluster_probe_$$_${RANDOM}@$HOST" \
        -kernel inet_dist_use_interface '{127,0,0,1}' \
        -pa "$EBIN" -pa "$STATE/ebin" -eval 'devcluster_ctl:main()' -extra "$@"
}

port_in_use() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

new_cookie() {
    local cookie
    cookie=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr 'a-f' 'A-F')
    mkdir -p "$STATE/home"
    chmod 0700 "$STATE/home"
    for f in "$STATE/cookie" "$STATE/home/.erlang.cookie"; do
        rm -f "$f"
        (umask 0377 && printf '%s' "$cookie" >"$f")
    done
}

start_epmd() {
    local port pid
    for port in $(seq 4370 4470); do
        port_in_use "$port" && continue
        nohup epmd -port "$port" -address "$HOST" >>"$STATE/logs/epmd.log" 2>&1 </dev/null &
        pid=$!
        echo "epmd $port $pid" >>"$PIDS"
        for _ in $(seq 1 50); do
            port_in_use "$port" && { EPMD_PORT=$port; return 0; }
            alive "$pid" || break
            sleep 0.1
        done
        # Lost a race for the port or failed to start: forget it, try the next.
        if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
        sed -i "/^epmd $port $pid\$/d" "$PIDS"
    done
    die "no free port for epmd in 4370-4470"
}

# Erlang string literal for a path.
erl_str() {
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

write_config() {
    local k=$1 backend=$2 nodes_term=$3 phase=${4:-phase0} server=${5:-erlmcp} core=${6:-}
    local data=$STATE/data/node$k
    local opts="#{}" module=erlmcp_session_$backend hybrid=""
    if [ "$backend" = dets ] && [ "$DETS_SLOTS" -gt 0 ]; then
        opts="#{min_no_slots => $DETS_SLOTS}"
    fi
    if [ "$backend" = hybrid ]; then
        module=erlmcp_session_backend_hybrid
        [ "$DETS_SLOTS" -gt 0 ] && opts="#{primary_opts => #{min_no_slots => $DETS_SLOTS}}"
        hybrid="{migration_phase, $phase},
                   {primary_backend, erlmcp_session_dets},
                   {secondary_backend, erlmcp_session_mnesia},
                   "
    fi
    if [ "$backend" = hybrid-ets ]; then
        module=erlmcp_session_backend_hybrid
        hybrid="{migration_phase, $phase},
                   {primary_backend, erlmcp_session_ets},
                   {secondary_backend, erlmcp_session_dets},
                   "
    fi
    # A deployed erlmcp_core block replaces the backend settings (the
    # fixture reads erlmcp's block first); the node's paths stay its own.
    local fixture="{session_backend, $module},
                   ${hybrid}{backend_opts, $opts},"
    local extra=""
    if [ -n "$core" ]; then
        fixture=""
        extra=",
 {erlmcp_core, $core}"
    fi
    # dist_auto_connect once: a partition (split) stays one until the
    # nodes are connected again on purpose, as in the tests' clusters.
    cat >"$STATE/node$k.config" <<EOF
%% Written by scripts/devcluster.sh up.
[{kernel, [{inet_dist_use_interface, {127,0,0,1}},
           {dist_auto_connect, once}]},
 {mnesia, [{dir, $(erl_str "$data/mnesia")},
           {core_dir, $(erl_str "$STATE/logs")}]},
 {erlmcp_fixture, [$fixture
                   {dets_dir, $(erl_str "$data/dets")},
                   {mnesia_nodes, $nodes_term},
                   {store_server, $server},
                   {session_cleanup_interval, 60000}]}$extra].
EOF
}

uses_mnesia() { [ "$1" = mnesia ] || [ "$1" = hybrid ]; }

EVAL_APP="case application:ensure_all_started(erlmcp_fixture) of {ok, _} -> ok; E -> io:format(\"erlmcp_fixture failed to start: ~p~n\", [E]), halt(1) end"

# start_node K NAME PORT [app]: starts node K in the background and records
# its pid; with "app" the application starts with it.
start_node() {
    local k=$1 name=$2 port=$3 app=${4:-}
    local start=()
    [ "$app" = app ] && start=(-eval "$EVAL_APP")
    HOME=$STATE/home ERL_EPMD_PORT=$port nohup erl -noshell -noinput \
        -name "$name" -pa "$EBIN" -pa "$LIBEBIN" -config "$STATE/node$k" "${start[@]}" \
        >>"$STATE/logs/node$k.log" 2>&1 </dev/null &
    echo "node $name $!" >>"$PIDS"
}

cmd_up() {
    local n=3 backend=dets keep=0 phase=phase0 server=erlmcp
    while [ $# -gt 0 ]; do
        case $1 in
            --nodes) n=${2:?--nodes needs a number}; shift 2 ;;
            --backend) backend=${2:?--backend needs ets, dets, mnesia or hybrid}; shift 2 ;;
            --phase) phase=${2:?--phase needs phase0..phase3}; shift 2 ;;
            --store-server) server=${2:?--store-server needs erlmcp or fixture}; shift 2 ;;
            --keep-data) keep=1; shift ;;
            *) die "up: unknown argument $1" ;;
        esac
    done
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive number"
    case $backend in ets|dets|mnesia|hybrid|hybrid-ets) ;; *) die "--backend must be ets, dets, mnesia, hybrid or hybrid-ets" ;; esac
    case $phase in phase0|phase1|phase2|phase3) ;; *) die "--phase must be phase0, phase1, phase2 or phase3" ;; esac
    case $server in erlmcp|fixture) ;; *) die "--store-server must be erlmcp or fixture" ;; esac

    if [ -f "$PIDS" ]; then
        while read -r kind a b; do
            case $kind in
                node) is_ours "$b" "$a" && die "already up ($a, pid $b): run down first" ;;
                epmd) is_ours "$b" epmd && die "already up (epmd pid $b): run down first" ;;
            esac
        done <"$PIDS"
        rm -f "$PIDS"
    fi

    make -s -C "$ROOT/erlang"

    mkdir -p "$STATE/logs"
    chmod 0700 "$STATE"
    if [ "$keep" = 0 ]; then rm -rf "$STATE/data" "$STATE"/logs/*.log; fi
    new_cookie
    : >"$PIDS"

    EPMD_PORT=
    start_epmd
    local port=$EPMD_PORT
    log "epmd on $HOST:$port"

    local names=() k
    for k in $(seq 1 "$n"); do names+=("migctl_dev$k@$HOST"); done
    local nodes_term csv
    nodes_term="[$(printf "'%s'," "${names[@]}" | sed 's/,$//')]"
    csv=$(IFS=,; echo "${names[*]}")

    for k in $(seq 1 "$n"); do
        local name=${names[$((k - 1))]}
        mkdir -p "$STATE/data/node$k/dets" "$STATE/data/node$k/mnesia"
        write_config "$k" "$backend" "$nodes_term" "$phase" "$server"
        # With Mnesia the schema must exist first: nodes start bare and
        # erlmcp_fixture_ctl mnesia_init creates it, then starts the app.
        if uses_mnesia "$backend"; then
            start_node "$k" "$name" "$port"
        else
            start_node "$k" "$name" "$port" app
        fi
    done

    cat >"$STATE/env" <<EOF
# Written by scripts/devcluster.sh up; use: source .devcluster/env
export MIGCTL_NODES=$csv
export MIGCTL_COOKIE_FILE=$STATE/cookie
export ERL_EPMD_PORT=$port
EOF
    echo "$backend" >"$STATE/backend"
    echo "$server" >"$STATE/server"

    local what=app
    uses_mnesia "$backend" && what=ping
    if ! ctl wait 60000 "$what" "${names[@]}"; then
        tail -n 20 "$STATE"/logs/node*.log >&2 || true
        die "nodes did not come up; see $STATE/logs (run down to clean up)"
    fi
    if uses_mnesia "$backend"; then
        ctl mnesia_init "${names[@]}" || die "mnesia set-up failed; see $STATE/logs"
    fi
    log "up: $n node(s), backend $backend"
    ctl status "${names[@]}"
    log "environment: source $STATE/env"
}

cmd_seed() {
    local store="" count="" node="" seed=1
    while [ $# -gt 0 ]; do
        case $1 in
            --store) store=${2:?}; shift 2 ;;
            --count) count=${2:?}; shift 2 ;;
            --node) node=${2:?}; shift 2 ;;
            --all-nodes) node=all; shift ;;
            --seed) seed=${2:?}; shift 2 ;;
            *) die "seed: unknown argument $1" ;;
        esac
    done
    case $store in ets|dets|mnesia) ;; *) die "--store must be ets, dets or mnesia" ;; esac
    [[ $count =~ ^[0-9]+$ ]] || die "--count must be a number"
    [[ $seed =~ ^[0-9]+$ ]] || die "--seed must be a number"
    if [ "$node" = all ]; then
        local all=() i=0 per rest pids=() p rc=0 c
        mapfile -t all < <(recorded_nodes)
        [ ${#all[@]} -gt 0 ] || die "no cluster recorded (run up first)"
        per=$((count / ${#all[@]})); rest=$((count % ${#all[@]}))
        for node in "${all[@]}"; do
            c=$per
            [ "$i" -lt "$rest" ] && c=$((c + 1))
            ctl seed "$node" "$store" "$c" "$((seed + i))" &
            pids+=($!)
            i=$((i + 1))
        done
        for p in "${pids[@]}"; do wait "$p" || rc=1; done
        [ $rc = 0 ] || die "seeding failed"
        return 0
    fi
    if [ -z "$node" ]; then
        node=$(recorded_nodes | head -n 1)
        [ -n "$node" ] || die "no cluster recorded (run up first)"
    fi
    [[ $node == *@* ]] || node="$node@$HOST"
    ctl seed "$node" "$store" "$count" "$seed"
}

cmd_status() {
    if [ ! -f "$PIDS" ]; then
        echo "no cluster (nothing recorded in $PIDS)"
        return 0
    fi
    local kind a b up=()
    while read -r kind a b; do
        case $kind in
            epmd) if is_ours "$b" epmd; then echo "epmd port $a pid $b running"; else echo "epmd port $a pid $b gone"; fi ;;
            node) if is_ours "$b" "$a"; then up+=("$a"); echo "$a pid $b running"; else echo "$a pid $b gone"; fi ;;
        esac
    done <"$PIDS"
    if [ ${#up[@]} -gt 0 ] && is_ours "$(awk '$1 == "epmd" { print $3; exit }' "$PIDS")" epmd; then
        ctl status "${up[@]}" || true
    fi
}

# The recorded nodes that are running, one a line.
running_nodes() {
    local kind a b
    [ -f "$PIDS" ] || die "no cluster recorded (run up first)"
    while read -r kind a b; do
        if [ "$kind" = node ] && is_ours "$b" "$a"; then echo "$a"; fi
    done <"$PIDS"
    return 0
}

cmd_load() {
    local sub=${1:-}
    [ $# -gt 0 ] && shift
    local rate=500 keyspace=3000 name=${DEVCLUSTER_LOAD_NAME:-devload} store=mnesia table="" out=""
    while [ $# -gt 0 ]; do
        case $1 in
            --rate) rate=${2:?}; shift 2 ;;
            --keyspace) keyspace=${2:?}; shift 2 ;;
            --name) name=${2:?}; shift 2 ;;
            --store) store=${2:?}; shift 2 ;;
            --table) table=${2:?}; shift 2 ;;
            --out) out=${2:?}; shift 2 ;;
            *) die "load: unknown argument $1" ;;
        esac
    done
    local nodes=()
    mapfile -t nodes < <(running_nodes)
    [ ${#nodes[@]} -gt 0 ] || die "no node running"
    case $sub in
        start)
            [[ $rate =~ ^[0-9]+$ ]] || die "--rate must be a number"
            [[ $keyspace =~ ^[1-9][0-9]*$ ]] || die "--keyspace must be a positive number"
            ctl2 load_start "$name" "$rate" "$keyspace" "${nodes[@]}" ;;
        rate)
            [[ $rate =~ ^[0-9]+$ ]] || die "--rate must be a number"
            ctl2 load_rate "$name" "$rate" "${nodes[@]}" ;;
        stats) ctl2 load_stats "$name" "${nodes[@]}" ;;
        errors) ctl2 load_errors "$name" "${nodes[@]}" ;;
        stop) ctl2 load_stop "$name" "${nodes[@]}" ;;
        verify)
            if [ -z "$table" ]; then
                case $store in
                    mnesia) table=erlmcp_session ;;
                    dets) table=erlmcp_sessions_dets ;;
                    ets) table=erlmcp_sessions_ets ;;
                    *) die "--store must be ets, dets or mnesia" ;;
                esac
            fi
            ctl2 load_verify "$name" "$store" "$table" "${nodes[@]}" ;;
        close) ctl2 load_close "$name" "${nodes[@]}" ;;
        history) [ -n "$out" ] || die "load history: --out DIR"
            ctl2 load_history "$name" "$out" "${nodes[@]}" ;;
        *) die "load: start, rate, stats, errors, stop, verify, history or close" ;;
    esac
}

cmd_split() {
    local iso=""
    while [ $# -gt 0 ]; do
        case $1 in
            --isolate) iso=${2:?}; shift 2 ;;
            *) die "split: unknown argument $1" ;;
        esac
    done
    local all=() a=() b=() n
    mapfile -t all < <(recorded_nodes)
    [ ${#all[@]} -ge 2 ] || die "split needs at least 2 nodes"
    [ -n "$iso" ] || iso=${#all[@]}
    if [[ $iso =~ ^[0-9]+$ ]]; then
        { [ "$iso" -ge 1 ] && [ "$iso" -le ${#all[@]} ]; } || die "--isolate: no node $iso"
        iso=${all[$((iso - 1))]}
    fi
    [[ $iso == *@* ]] || iso="$iso@$HOST"
    for n in "${all[@]}"; do
        if [ "$n" = "$iso" ]; then b+=("$n"); else a+=("$n"); fi
    done
    [ ${#b[@]} = 1 ] || die "--isolate: $iso is not a node of the cluster"
    ctl2 split "$(IFS=,; echo "${a[*]}")" "${b[0]}"
}

cmd_reconnect() {
    local nodes=()
    mapfile -t nodes < <(running_nodes)
    ctl2 reconnect "${nodes[@]}"
}

# Waits up to $2 seconds for every pid in $1 (space separated) to exit.
wait_gone() {
    local pids=$1 secs=$2 p left
    for _ in $(seq 1 $((secs * 10))); do
        left=0
        for p in $pids; do alive "$p" && left=1; done
        [ $left = 0 ] && return 0
        sleep 0.1
    done
    return 1
}

# Sends signal $1 to every recorded node that is still ours.
signal_nodes() {
    local kind a b
    while read -r kind a b; do
        if [ "$kind" = node ] && is_ours "$b" "$a"; then
            log "$1 $a (pid $b)"
            kill "-$1" "$b" 2>/dev/null || true
        fi
    done <"$PIDS"
}

cmd_restart() {
    local target="" backend="" phase="" sysconf="" ifchanged=0
    while [ $# -gt 0 ]; do
        case $1 in
            --if-changed) ifchanged=1; shift ;;
            --backend) backend=${2:?--backend needs a backend}; shift 2 ;;
            --phase) phase=${2:?--phase needs phase0..phase3}; shift 2 ;;
            --sys-config) sysconf=${2:?--sys-config needs a file}; shift 2 ;;
            -*) die "restart: unknown argument $1" ;;
            *) [ -z "$target" ] || die "restart: one node at a time"; target=$1; shift ;;
        esac
    done
    [ -n "$target" ] || die "restart: which node? (a name from status, or its number)"
    local all=() name="" k=0 n
    mapfile -t all < <(recorded_nodes)
    [ ${#all[@]} -gt 0 ] || die "no cluster recorded (run up first)"
    # Node K is migctl_devK@HOST: its config, data and log are nodeK's
    # (the pid file's order changes with every restart).
    [[ $target =~ ^[0-9]+$ ]] && target=migctl_dev$target@$HOST
    for n in "${all[@]}"; do
        if [ "$n" = "$target" ]; then name=$n; k=${n#migctl_dev}; k=${k%%@*}; fi
    done
    [ -n "$name" ] || die "restart: no node $target in this cluster (${all[*]})"
    mapfile -t all < <(printf '%s\n' "${all[@]}" | sort -V)
    local port pid
    port=$(epmd_port) || die "no epmd recorded (run up first)"
    pid=$(awk -v n="$name" '$1 == "node" && $2 == n { print $3 }' "$PIDS" | tail -n 1)
    local nodes_term
    nodes_term="[$(printf "'%s'," "${all[@]}" | sed 's/,$//')]"
    local cur_backend server
    cur_backend=$(cat "$STATE/backend" 2>/dev/null || echo dets)
    server=$(cat "$STATE/server" 2>/dev/null || echo erlmcp)
    local core=""
    if [ -n "$sysconf" ]; then
        [ -f "$sysconf" ] || die "restart: no file $sysconf"
        # The erlmcp_core block, with this node's paths and node list.
        core=$(erl -noshell -noinput -eval '
            [F, Dir, Nodes] = init:get_plain_arguments(),
            case file:consult(F) of
                {ok, [Cfg]} when is_list(Cfg) ->
                    Core0 = proplists:get_value(erlmcp_core, Cfg, []),
                    Core0 =/= [] orelse begin io:format(standard_error, "no erlmcp_core block in ~s~n", [F]), halt(2) end,
                    {ok, Ts, _} = erl_scan:string(Nodes ++ "."), {ok, Ns} = erl_parse:parse_term(Ts),
                    Core = lists:keystore(mnesia_nodes, 1, lists:keystore(dets_dir, 1, Core0, {dets_dir, Dir}), {mnesia_nodes, Ns}),
                    io:format("~0p", [Core]), halt(0);
                Other -> io:format(standard_error, "cannot read ~s: ~p~n", [F, Other]), halt(2)
            end' -extra "$sysconf" "$STATE/data/node$k/dets" "$nodes_term") || die "restart: bad --sys-config $sysconf"
    fi
    if [ -n "$backend" ] || [ -n "$phase" ] || [ -n "$core" ]; then
        [ -n "$backend" ] || backend=$cur_backend
        case $backend in ets|dets|mnesia|hybrid|hybrid-ets) ;; *) die "--backend must be ets, dets, mnesia, hybrid or hybrid-ets" ;; esac
        local before=""
        [ -f "$STATE/node$k.config" ] && before=$(cat "$STATE/node$k.config")
        write_config "$k" "$backend" "$nodes_term" "${phase:-phase0}" "$server" "$core"
        [ -n "$core" ] || echo "$backend" >"$STATE/backend"
        if [ "$ifchanged" = 1 ] && [ "$before" = "$(cat "$STATE/node$k.config")" ]; then
            log "$name: configuration unchanged, not restarted"
            return 0
        fi
    fi
    if [ -n "$pid" ] && is_ours "$pid" "$name"; then
        ctl stop "$name" >/dev/null || kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" 20; then
            kill -TERM "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || { kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || true; }
        fi
    fi
    sed -i "/^node $name /d" "$PIDS"
    # Started bare, connected to the others, then the application: the
    # nodes run with dist_auto_connect once (a split stays one), so a
    # restarted node must be connected on purpose before its Mnesia
    # starts, or Mnesia would take the restart for a partition.
    start_node "$k" "$name" "$port"
    ctl wait "$WAIT_MS" ping "$name" >/dev/null || die "$name did not come back; see $STATE/logs/node$k.log"
    local others=() o
    for o in "${all[@]}"; do
        [ "$o" != "$name" ] && others+=("$o")
    done
    if [ ${#others[@]} -gt 0 ]; then
        ctl2 reconnect "$name" "${others[@]}" >/dev/null || die "could not connect $name to ${others[*]}"
    fi
    ctl start_app "$name" >/dev/null || die "erlmcp_fixture did not start on $name; see $STATE/logs/node$k.log"
    if ! ctl wait "$WAIT_MS" app "$name"; then
        tail -n 20 "$STATE/logs/node$k.log" >&2 || true
        die "$name did not come back; see $STATE/logs/node$k.log"
    fi
    log "restarted $name (data and cookie kept)"
}

cmd_deploy() {
    local sysconf=""
    while [ $# -gt 0 ]; do
        case $1 in
            --sys-config) sysconf=${2:?--sys-config needs a file}; shift 2 ;;
            *) die "deploy: unknown argument $1" ;;
        esac
    done
    [ -n "$sysconf" ] || die "deploy: --sys-config FILE is required"
    local all=() n
    mapfile -t all < <(recorded_nodes | sort -V)
    [ ${#all[@]} -gt 0 ] || die "no cluster recorded (run up first)"
    for n in "${all[@]}"; do
        cmd_restart "$n" --sys-config "$sysconf" --if-changed
    done
}

cmd_down() {
    if [ ! -f "$PIDS" ]; then
        log "nothing to stop"
        return 0
    fi
    local kind a b names=() pids="" epmd_pid=""
    while read -r kind a b; do
        case $kind in
            node) if is_ours "$b" "$a"; then names+=("$a"); pids="$pids $b"; fi ;;
            epmd) epmd_pid=$b ;;
        esac
    done <"$PIDS"

    if [ ${#names[@]} -gt 0 ]; then
        # Politely: init:stop() on each node. Without our epmd the nodes
        # cannot be reached; SIGTERM makes the VM run init:stop() too.
        if [ -n "$epmd_pid" ] && is_ours "$epmd_pid" epmd; then
            ctl stop "${names[@]}" || signal_nodes TERM
        else
            signal_nodes TERM
        fi
        if ! wait_gone "$pids" 10; then
            signal_nodes TERM
            if ! wait_gone "$pids" 5; then
                signal_nodes KILL
                wait_gone "$pids" 5 || true
            fi
        fi
    fi
    if [ -n "$epmd_pid" ] && is_ours "$epmd_pid" epmd; then
        kill -TERM "$epmd_pid" 2>/dev/null || true
        wait_gone "$epmd_pid" 5 || { kill -KILL "$epmd_pid" 2>/dev/null || true; }
    fi
    rm -f "$PIDS"
    log "down"
}

main() {
    local cmd=${1:-help}
    [ $# -gt 0 ] && shift
    command -v erl >/dev/null || die "erl not found (install Erlang/OTP)"
    case $cmd in
        up) cmd_up "$@" ;;
        seed) cmd_seed "$@" ;;
        status) cmd_status "$@" ;;
        load) cmd_load "$@" ;;
        split) cmd_split "$@" ;;
        reconnect) cmd_reconnect "$@" ;;
        restart) cmd_restart "$@" ;;
        deploy) cmd_deploy "$@" ;;
        down) cmd_down "$@" ;;
        help|-h|--help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
