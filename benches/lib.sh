# Shared by the bench scripts (sourced, not run): samples, timing, medians.
# The sourcing script sets WORK (a scratch directory) first.

declare -A samples # METRIC -> space-separated values (seconds or bytes)
add() { samples[$1]+="$2 "; }
now() { date +%s%N; }
# prefault: touches WARM_MB MiB of memory (a file in /dev/shm) and frees it again. On a VM with
# free page reporting (Firecracker, and KVM guests booted with page_reporting), memory freed for
# more than about two seconds goes back to the host, and the first touch of each such page costs a
# fault in the host: a `cp` of 1.3 GB took 1.9-2.9 s of system time that way against 0.3-0.44 s
# right after a prefault. Touching the memory just before a timed step gives every method the
# same start, the one a machine without such reporting always has. Set WARM_MB to a bit more
# than the largest file a step writes; 0 (the default) skips it.
WARM_MB=${WARM_MB:-0}
prefault() {
    if ((WARM_MB > 0)) && [[ -d /dev/shm ]]; then
        head -c "${WARM_MB}M" /dev/zero >/dev/shm/sparse-bench-prefault
        rm -f /dev/shm/sparse-bench-prefault
    fi
}
# warm_mb FILE...: a WARM_MB for steps that write up to the largest of FILE, with a margin.
warm_mb() { stat -L -c %s "$@" | sort -n | tail -n 1 | awk '{printf "%d", $1 * 1.25 / 1048576 + 64}'; }
# timed METRIC COMMAND...: runs COMMAND (output to $WORK/last.out and last.err), records its
# wall time in seconds. Dirty pages of earlier steps are flushed first, so that their writeback
# (sparse add's syncfs would wait for it) is charged to no step; then memory is prefaulted.
timed() {
    local metric=$1 t0 t1
    shift
    sync
    prefault
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
# evict DIR: drops the (clean: `sync` first) pages of every file below DIR from the page cache.
evict() {
    python3 - "$1" <<'PY'
import os, sys
for root, _, files in os.walk(sys.argv[1]):
    for name in files:
        fd = os.open(os.path.join(root, name), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
PY
}
# perf_ms METRIC STAT: records task-clock and elapsed ms of `perf stat` output STAT under
# cpu.METRIC and wall.METRIC.
perf_ms() {
    add "cpu.$1" "$(awk '/task-clock/ {gsub(",", "", $1); print $1}' <<<"$2")"
    add "wall.$1" "$(awk '/seconds time elapsed/ {print $1 * 1000}' <<<"$2")"
}
