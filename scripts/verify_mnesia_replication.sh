#!/usr/bin/env bash
# verify_mnesia_replication.sh [migctl flags]
#
# Runbook (DATABASE MIGRATION RUNBOOK, DETS -> Mnesia, Phase 3 step 3):
#   ./scripts/verify_mnesia_replication.sh
#   # Node: erlmcp1@staging, Table size: 10000
#   # ...
#   # ✅ All nodes consistent
# Maps to:
#   migctl cluster verify-replication [flags]
# which checksums every node's local copy of each session table. Its table
# output is printed in the runbook's words (the checksum column dropped,
# "✅ All nodes consistent", "❌ INCONSISTENT: ..."); with -o json it is
# passed through. Exit 0 when every copy agrees, 4 when they differ, 3
# when a node cannot be reached.
set -euo pipefail
# shellcheck source=_migctl.sh
. "$(dirname "${BASH_SOURCE[0]}")/_migctl.sh"
split_args "$@"
if wants_json; then
    exec "$MIGCTL" cluster verify-replication "$@"
fi
# pipefail: the exit code is migctl's.
"$MIGCTL" cluster verify-replication "$@" | sed -e 's/, Checksum: [^ ]*$//' \
    -e 's/^All nodes consistent/✅ All nodes consistent/' -e 's/^INCONSISTENT: /❌ INCONSISTENT: /'
