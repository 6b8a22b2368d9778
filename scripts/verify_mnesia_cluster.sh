#!/usr/bin/env bash
# verify_mnesia_cluster.sh [migctl flags]
#
# Runbook (TROUBLESHOOTING GUIDE, Issue 4: Mnesia Cluster Split-Brain,
# Resolution step 4 "Verify cluster formed"):
#   ./scripts/verify_mnesia_cluster.sh
# Maps to:
#   migctl cluster status [flags] && migctl cluster verify-replication [flags]
# (the latter through verify_mnesia_replication.sh, in the runbook's words)
# Exit 0 when every node runs Mnesia with every other one and every copy
# of the session tables agrees; otherwise the first failing check's code
# (6 degraded, 7 partitioned, 4 copies differ, 3 unreachable).
set -euo pipefail
# shellcheck source=_migctl.sh
. "$(dirname "${BASH_SOURCE[0]}")/_migctl.sh"
"$MIGCTL" cluster status "$@"
exec "$(dirname "${BASH_SOURCE[0]}")/verify_mnesia_replication.sh" "$@"
