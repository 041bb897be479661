# Shared by the bench scripts (sourced, not run): samples, timing, medians.
# The sourcing script sets WORK (a scratch directory) first.

declare -A samples # METRIC -> space-separated values (seconds or bytes)
add() { samples[$1]+="$2 "; }
now() { date +%s%N; }
# timed METRIC COMMAND...: runs COMMAND (output to $WORK/last.out and last.err), records its
# wall time in seconds. Dirty pages of earlier steps are flushed first, so that their writeback
# (sparse add's syncfs would wait for it) is charged to no step.
timed() {
    local metric=$1 t0 t1
    shift
    sync
    t0=$(now)
    "$@" >"$WORK/last.out" 2>"$WORK/last.err" || {
        echo "FAILED: $*" >&2
        cat "$WORK/last.err" >&2
        exit 1
    }
    t1=$(now)
    add "$metric" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}')"
}
median() {
    tr ' ' '\n' <<<"${samples[$1]}" | grep . | sort -g |
        awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
range() {
    tr ' ' '\n' <<<"${samples[$1]}" | grep . | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {print lo "–" hi}'
}
store_bytes() { du -sb "$1/.sparse" | cut -f1; }
