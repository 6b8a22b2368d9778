#!/usr/bin/env bash
# deploy_config.sh [ENV | SYS_CONFIG] [--phase PHASE] [--percent P] [migctl flags]
#
# Runbook (DATABASE MIGRATION RUNBOOK: ETS -> DETS step 3, DETS -> Mnesia
# Phase 1 step 2):
#   ./scripts/deploy_config.sh staging
# The migration settings of a running cluster do not come from sys.config:
# the hybrid backend takes `migration_phase' from its sys.config only until
# a phase is recorded, then every node follows the phase kept in the
# replicated table migctl_migration (so that all nodes switch at once and a
# restarted node cannot fall back). Deploying them therefore means:
#   migctl phase set PHASE [--percent P] [flags]
# with PHASE (and P) taken from --phase/--percent, else from the
# {migration_phase, PHASE} (and {migration_percent, P}) entries of
# SYS_CONFIG, or of config/sys.config.ENV when ENV is given. When neither
# names a phase it only prints the cluster's current one:
#   migctl phase show [flags]
# (e.g. the ETS -> DETS step, whose config has no migration phase: the
# backend change itself is a release/restart, and `migctl verify
# persistence` checks it). Without a terminal pass --yes and --reason.
#
# On the dev cluster (scripts/devcluster.sh up, its env sourced) the
# configuration change itself is deployed too, as erlmcp's own deployment
# would: the erlmcp_core block of SYS_CONFIG goes to every node whose
# configuration it changes, restarted one at a time with its data and
# cookie kept (scripts/devcluster.sh deploy), before the phase is set.
# With --dry-run it only says so.
set -euo pipefail
# shellcheck source=_migctl.sh
. "$(dirname "${BASH_SOURCE[0]}")/_migctl.sh"
split_args "$@"
phase="" percent=() rest=()
set -- "${FLAGS[@]}"
while [ $# -gt 0 ]; do
    case $1 in
        --phase) phase=${2:?--phase needs a phase}; shift 2 ;;
        --phase=*) phase=${1#*=}; shift ;;
        --percent) percent=(--percent "${2:?--percent needs a number}"); shift 2 ;;
        --percent=*) percent=(--percent "${1#*=}"); shift ;;
        *) rest+=("$1"); shift ;;
    esac
done
if [ ${#POS[@]} -gt 1 ]; then
    echo "usage: ${0##*/} [ENV | SYS_CONFIG] [--phase PHASE] [--percent P] [migctl flags]" >&2
    exit 2
fi
if [ ${#POS[@]} = 1 ]; then
    file=${POS[0]}
    [ -f "$file" ] || file=config/sys.config.${POS[0]}
    if [ ! -f "$file" ]; then
        echo "${0##*/}: no file ${POS[0]} nor $file" >&2
        exit 2
    fi
    # {migration_phase, phase1} and {migration_percent, 10}, as the runbook writes them.
    if [ -z "$phase" ]; then
        phase=$(sed -n 's/.*{[[:space:]]*migration_phase[[:space:]]*,[[:space:]]*\(phase[0-3]\)[[:space:]]*}.*/\1/p' "$file" | head -n 1)
    fi
    if [ ${#percent[@]} = 0 ]; then
        p=$(sed -n 's/.*{[[:space:]]*migration_percent[[:space:]]*,[[:space:]]*\([0-9]\{1,3\}\)[[:space:]]*}.*/\1/p' "$file" | head -n 1)
        if [ -n "$p" ]; then percent=(--percent "$p"); fi
    fi
fi
# The dev cluster: deploy the file's erlmcp_core block on its nodes.
devstate=${DEVCLUSTER_STATE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.devcluster}
if [ -n "${file:-}" ] && [ -f "$devstate/pids" ] && [ -f "$devstate/env" ] &&
    grep -q erlmcp_core "$file"; then
    devnodes=$(sed -n 's/^export MIGCTL_NODES=//p' "$devstate/env")
    if [ "${MIGCTL_NODES:-$devnodes}" = "$devnodes" ]; then
        dry=0
        for a in "${rest[@]}"; do [ "$a" = --dry-run ] && dry=1; done
        if [ "$dry" = 1 ]; then
            echo "would deploy the erlmcp_core block of $file on the dev cluster ($devnodes): each node whose configuration changes restarts, one at a time"
        else
            "$(dirname "${BASH_SOURCE[0]}")/devcluster.sh" deploy --sys-config "$file" >&2 || exit 1
        fi
    fi
fi
if [ -z "$phase" ]; then
    # nothing to change: the flags of a change do not apply to show.
    show=()
    set -- "${rest[@]}"
    while [ $# -gt 0 ]; do
        case $1 in
            --yes | --dry-run | --force | --reason=*) shift ;;
            --reason) shift 2 ;;
            *) show+=("$1"); shift ;;
        esac
    done
    exec "$MIGCTL" phase show "${show[@]}"
fi
exec "$MIGCTL" phase set "$phase" "${percent[@]}" "${rest[@]}"
