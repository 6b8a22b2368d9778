#!/usr/bin/env bash
# scale_mnesia_cluster.sh --add-node NODE | --remove-node NODE [migctl flags]
#
# Runbook (INCIDENT RESPONSE PLAYBOOK, capacity):
#   ./scripts/scale_mnesia_cluster.sh --add-node
# Maps to:
#   migctl cluster add-node NODE [flags]     (--add-node NODE)
#   migctl cluster remove-node NODE [flags]  (--remove-node NODE)
# add-node: extra_db_nodes, schema and session tables as disc_copies on
# NODE, waits until loaded, verifies. The cluster is MIGCTL_NODES (or
# --nodes); NODE must run erlmcp with Mnesia and the same cookie. Without a
# terminal pass --yes; --dry-run shows the plan.
set -euo pipefail
# shellcheck source=_migctl.sh
. "$(dirname "${BASH_SOURCE[0]}")/_migctl.sh"
usage() { echo "usage: ${0##*/} --add-node NODE | --remove-node NODE [migctl flags]" >&2; exit 2; }
[ $# -ge 1 ] || usage
case $1 in
    --add-node | --remove-node) [ $# -ge 2 ] || usage; op=${1#--}; node=$2; shift 2 ;;
    --add-node=* | --remove-node=*) op=${1%%=*}; op=${op#--}; node=${1#*=}; shift ;;
    *) usage ;;
esac
exec "$MIGCTL" cluster "$op" "$node" "$@"
