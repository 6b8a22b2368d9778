#!/usr/bin/env bash
# create_mnesia_tables.sh [SESSION_TABLE [STATE_TABLE]] [migctl flags]
#
# Runbook (DATABASE MIGRATION RUNBOOK, DETS -> Mnesia, Phase 0 step 3):
#   ./scripts/create_mnesia_tables.sh erlmcp_sessions erlmcp_state
# Maps to:
#   migctl tables create --mnesia-table SESSION_TABLE [flags]
# which creates the session table (erlmcp's layout: session_id,
# session_data, last_accessed) and the hybrid backend's phase table as
# disc_copies on every node; existing tables with the right layout are
# accepted. The phase table is always named migctl_migration (the hybrid
# backend reads that name): the runbook's STATE_TABLE `erlmcp_state' (or
# migctl_migration) stands for it, any other name is refused (exit 2).
# Note: erlmcp's Mnesia backend uses `erlmcp_session' by default; pass the
# name your sys.config gives (table_name). Without SESSION_TABLE,
# MIGCTL_MNESIA_TABLE or erlmcp_session.
set -euo pipefail
# shellcheck source=_migctl.sh
. "$(dirname "${BASH_SOURCE[0]}")/_migctl.sh"
split_args "$@"
table=()
if [ ${#POS[@]} -ge 1 ]; then table=(--mnesia-table "${POS[0]}"); fi
if [ ${#POS[@]} -ge 2 ]; then
    case ${POS[1]} in
        erlmcp_state | migctl_migration) ;;
        *) echo "${0##*/}: the state table is migctl_migration (the runbook's erlmcp_state); got ${POS[1]}" >&2; exit 2 ;;
    esac
fi
if [ ${#POS[@]} -gt 2 ]; then
    echo "usage: ${0##*/} [SESSION_TABLE [STATE_TABLE]] [migctl flags]" >&2
    exit 2
fi
exec "$MIGCTL" tables create "${table[@]}" "${FLAGS[@]}"
