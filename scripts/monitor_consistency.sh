#!/usr/bin/env bash
# monitor_consistency.sh [--duration=14d] [--alert-on-mismatch=true] [migctl flags]
#
# Runbook (DATABASE MIGRATION RUNBOOK, DETS -> Mnesia, Phase 1 step 3):
#   ./scripts/monitor_consistency.sh --duration=14d --alert-on-mismatch=true
# Maps to:
#   migctl consistency monitor --source dets --target mnesia [flags]
# (source and target default to MIGCTL_SOURCE / MIGCTL_TARGET, else dets
# and mnesia; a --source or --target given here wins). A sample check every
# --interval (default 5m) until --duration has passed since the monitor
# first started (it resumes from the journal after a restart); serves
# /metrics and /healthz on --metrics-addr; alerts once per new mismatch
# (--alert-webhook for Alertmanager). SIGTERM stops it with exit 0 (the
# verdict so far is in `migctl consistency history`); only a run that
# reaches --duration exits 4 for mismatches. deploy/ has the
# systemd unit and the alert rules.
set -euo pipefail
# shellcheck source=_migctl.sh
. "$(dirname "${BASH_SOURCE[0]}")/_migctl.sh"
exec "$MIGCTL" consistency monitor --source "${MIGCTL_SOURCE:-dets}" --target "${MIGCTL_TARGET:-mnesia}" "$@"
