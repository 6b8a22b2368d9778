#!/usr/bin/env bash
# devcluster.sh: a local cluster of Erlang nodes running the erlmcp_fixture
# application (erlang/app), for migctl's demos and manual tests.
#
#   scripts/devcluster.sh up [--nodes N] [--backend ets|dets|mnesia] [--keep-data]
#   scripts/devcluster.sh seed --store ets|dets|mnesia --count N [--node NODE] [--seed S]
#   scripts/devcluster.sh status
#   scripts/devcluster.sh down
#
# Everything lives in .devcluster/ at the repository root:
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
STATE=$ROOT/.devcluster
EBIN=$ROOT/erlang/app/ebin
PIDS=$STATE/pids
HOST=127.0.0.1
# DETS files made by the cluster get this many hash slots up front, which
# keeps big fills fast (8 MB of empty file at 1M); 0 uses DETS's default.
DETS_SLOTS=${DEVCLUSTER_DETS_SLOTS:-1000000}

die() { echo "devcluster: $*" >&2; exit 1; }
log() { echo "devcluster: $*"; }

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
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
    local k=$1 backend=$2 nodes_term=$3
    local data=$STATE/data/node$k
    local opts="#{}"
    if [ "$backend" = dets ] && [ "$DETS_SLOTS" -gt 0 ]; then
        opts="#{min_no_slots => $DETS_SLOTS}"
    fi
    cat >"$STATE/node$k.config" <<EOF
%% Written by scripts/devcluster.sh up.
[{kernel, [{inet_dist_use_interface, {127,0,0,1}}]},
 {mnesia, [{dir, $(erl_str "$data/mnesia")}]},
 {erlmcp_fixture, [{session_backend, erlmcp_session_$backend},
                   {backend_opts, $opts},
                   {dets_dir, $(erl_str "$data/dets")},
                   {mnesia_nodes, $nodes_term},
                   {session_cleanup_interval, 60000}]}].
EOF
}

cmd_up() {
    local n=3 backend=dets keep=0
    while [ $# -gt 0 ]; do
        case $1 in
            --nodes) n=${2:?--nodes needs a number}; shift 2 ;;
            --backend) backend=${2:?--backend needs ets, dets or mnesia}; shift 2 ;;
            --keep-data) keep=1; shift ;;
            *) die "up: unknown argument $1" ;;
        esac
    done
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive number"
    case $backend in ets|dets|mnesia) ;; *) die "--backend must be ets, dets or mnesia" ;; esac

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

    local eval_app="case application:ensure_all_started(erlmcp_fixture) of {ok, _} -> ok; E -> io:format(\"erlmcp_fixture failed to start: ~p~n\", [E]), halt(1) end"
    for k in $(seq 1 "$n"); do
        local name=${names[$((k - 1))]}
        mkdir -p "$STATE/data/node$k/dets" "$STATE/data/node$k/mnesia"
        write_config "$k" "$backend" "$nodes_term"
        local start=()
        # With Mnesia the schema must exist first: nodes start bare and
        # erlmcp_fixture_ctl mnesia_init creates it, then starts the app.
        [ "$backend" = mnesia ] || start=(-eval "$eval_app")
        HOME=$STATE/home ERL_EPMD_PORT=$port nohup erl -noshell -noinput \
            -name "$name" -pa "$EBIN" -config "$STATE/node$k" "${start[@]}" \
            >>"$STATE/logs/node$k.log" 2>&1 </dev/null &
        echo "node $name $!" >>"$PIDS"
    done

    cat >"$STATE/env" <<EOF
# Written by scripts/devcluster.sh up; use: source .devcluster/env
export MIGCTL_NODES=$csv
export MIGCTL_COOKIE_FILE=$STATE/cookie
export ERL_EPMD_PORT=$port
EOF
    echo "$backend" >"$STATE/backend"

    local what=app
    [ "$backend" = mnesia ] && what=ping
    if ! ctl wait 60000 "$what" "${names[@]}"; then
        tail -n 20 "$STATE"/logs/node*.log >&2 || true
        die "nodes did not come up; see $STATE/logs (run down to clean up)"
    fi
    if [ "$backend" = mnesia ]; then
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
            --seed) seed=${2:?}; shift 2 ;;
            *) die "seed: unknown argument $1" ;;
        esac
    done
    case $store in ets|dets|mnesia) ;; *) die "--store must be ets, dets or mnesia" ;; esac
    [[ $count =~ ^[0-9]+$ ]] || die "--count must be a number"
    [[ $seed =~ ^[0-9]+$ ]] || die "--seed must be a number"
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
        down) cmd_down "$@" ;;
        help|-h|--help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
