# _migctl.sh: sourced by the runbook wrapper scripts in this directory
# (create_mnesia_schema.sh, check_mnesia_health.sh, ...). It only finds
# migctl and splits the arguments; the wrappers have no logic of their own.
#
# migctl is $MIGCTL, else bin/migctl next to this directory (make build).
# Nodes, cookie, journal, EPMD port come from migctl's usual sources:
# MIGCTL_NODES, MIGCTL_COOKIE_FILE, MIGCTL_JOURNAL, ERL_EPMD_PORT,
# MIGCTL_CONFIG (see `migctl --help`). Exit codes are migctl's:
# 0 ok, 1 failed, 2 bad input, 3 unreachable, 4 check found problems,
# 5 refused, 6 cluster degraded, 7 cluster partitioned.

MIGCTL=${MIGCTL:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/bin/migctl}
if [ ! -x "$MIGCTL" ]; then
    echo "${0##*/}: migctl not found at $MIGCTL (run make build, or set MIGCTL)" >&2
    exit 2
fi

# split_args ARG...: the leading words that are not flags go to POS, the
# rest (from the first word starting with "-") to FLAGS, passed to migctl
# as they are (--yes, --dry-run, -o json, --reason TEXT, ...).
split_args() {
    POS=()
    FLAGS=()
    while [ $# -gt 0 ] && [[ $1 != -* ]]; do
        POS+=("$1")
        shift
    done
    FLAGS=("$@")
}

# wants_json: true when the flags or MIGCTL_OUTPUT ask for JSON output.
wants_json() {
    local prev="" a
    [ "${MIGCTL_OUTPUT:-}" = json ] && return 0
    for a in "${FLAGS[@]}"; do
        case $a in
            -o=json | --output=json | -ojson) return 0 ;;
            json) [ "$prev" = -o ] || [ "$prev" = --output ] && return 0 ;;
        esac
        prev=$a
    done
    return 1
}
