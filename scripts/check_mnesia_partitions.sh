#!/usr/bin/env bash
# check_mnesia_partitions.sh [migctl flags]
#
# Runbook (TROUBLESHOOTING GUIDE, Issue 4: Mnesia Cluster Split-Brain,
# Diagnosis step 2):
#   ./scripts/check_mnesia_partitions.sh
# Maps to:
#   migctl cluster status [flags]
# and, only when it finds a split (exit 7), also
#   migctl cluster heal --plan [flags]
# which changes nothing: it shows the islands, what each side wrote and
# deleted since the split, the winner and why. Exit 0 no partition, 7
# partitioned, 6 degraded, 3 unreachable. Heal with
#   migctl cluster heal --execute --yes --reason "..."
# (instead of the runbook's stop everything / delete the schema).
set -euo pipefail
# shellcheck source=_migctl.sh
. "$(dirname "${BASH_SOURCE[0]}")/_migctl.sh"
rc=0
"$MIGCTL" cluster status "$@" || rc=$?
if [ "$rc" = 7 ]; then
    echo
    "$MIGCTL" cluster heal --plan "$@" || true
fi
exit "$rc"
