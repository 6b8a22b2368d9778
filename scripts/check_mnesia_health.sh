#!/usr/bin/env bash
# check_mnesia_health.sh [migctl flags]
#
# Runbook (TROUBLESHOOTING GUIDE, Mnesia):
#   ./scripts/check_mnesia_health.sh
# Maps to:
#   migctl cluster status [flags]
# Every node's own view (reachable, Mnesia running, db_nodes,
# running_db_nodes, tables with storage, size and where they loaded from)
# and the verdict. Exit 0 healthy, 6 degraded (a node or its Mnesia
# down), 7 partitioned (split brain), 3 unreachable.
set -euo pipefail
# shellcheck source=_migctl.sh
. "$(dirname "${BASH_SOURCE[0]}")/_migctl.sh"
exec "$MIGCTL" cluster status "$@"
