#!/usr/bin/env bash
# create_mnesia_schema.sh NODE... [migctl flags]
#
# Runbook (DATABASE MIGRATION RUNBOOK, DETS -> Mnesia, Phase 0 step 2):
#   ./scripts/create_mnesia_schema.sh $NODES
# Maps to:
#   migctl schema create --nodes NODE,NODE,... [flags]
# A disc schema on every node; refused (exit 5) when one exists
# (--delete-existing-schema deletes it and every table in it; the old
# --force is refused with exit 2). Without NODEs, MIGCTL_NODES is used.
# Without a terminal pass --yes; --dry-run shows the plan.
set -euo pipefail
# shellcheck source=_migctl.sh
. "$(dirname "${BASH_SOURCE[0]}")/_migctl.sh"
split_args "$@"
nodes=()
if [ ${#POS[@]} -gt 0 ]; then nodes=(--nodes "$(IFS=,; echo "${POS[*]}")"); fi
exec "$MIGCTL" schema create "${nodes[@]}" "${FLAGS[@]}"
