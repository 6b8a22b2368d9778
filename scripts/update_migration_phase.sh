#!/usr/bin/env bash
# update_migration_phase.sh phase0|phase1|phase2|phase3 [--percent P] [migctl flags]
#
# Runbook (DATABASE MIGRATION RUNBOOK, DETS -> Mnesia, Phase 2):
#   ./scripts/update_migration_phase.sh phase2
#   ./scripts/update_migration_phase.sh phase3
# Maps to:
#   migctl phase set PHASE [--percent P] [flags]
# The change is planned, gated (phase2 needs a complete backfill; phase3
# needs phase2 at 100 % and a read-error rate under --max-read-error-rate)
# and committed on every node or on none: a failed gate exits 5.
# Without a terminal pass --yes (and --reason); --dry-run shows the plan;
# `migctl phase rollback` goes back one phase.
set -euo pipefail
# shellcheck source=_migctl.sh
. "$(dirname "${BASH_SOURCE[0]}")/_migctl.sh"
split_args "$@"
if [ ${#POS[@]} -ne 1 ]; then
    echo "usage: ${0##*/} phase0|phase1|phase2|phase3 [--percent P] [migctl flags]" >&2
    exit 2
fi
exec "$MIGCTL" phase set "${POS[0]}" "${FLAGS[@]}"
