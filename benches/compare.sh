#!/usr/bin/env bash
# Side-by-side sizes and times on the real MiniLM pair (fp32): cp, zstd -3, zstd -19 and sparse.
#
#   benches/compare.sh            # RUNS=5: every time is the median of 5 runs
#
# Data: base.safetensors and finetune.safetensors from scripts/fetch-testdata.sh
# (${SPARSE_TESTDATA:-~/.cache/sparse-testdata}); BASE=... FT=... point elsewhere.
# Each run: cp of the fine-tune, cp + fsync of the copy, zstd -3 and zstd -19 of it (and their
# decompression), then a fresh store: add base, commit, add fine-tune --base base, commit,
# checkout of the fine-tune (checked with sha256), and the fine-tune added alone to another
# fresh store. Store growth is `du -sb .sparse` before and after each step. The page cache is
# warm (inputs are read once before the runs). Prints Markdown tables.
#
# Needs the zstd CLI: apt-get update && apt-get install -y zstd
set -euo pipefail

RUNS=${RUNS:-5}
DATA=${SPARSE_TESTDATA:-$HOME/.cache/sparse-testdata}
BASE=${BASE:-$DATA/base.safetensors}
FT=${FT:-$DATA/finetune.safetensors}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for f in "$BASE" "$FT"; do
    [[ -f $f ]] || {
        echo "missing $f: run scripts/fetch-testdata.sh" >&2
        exit 1
    }
done
command -v zstd >/dev/null || {
    echo "zstd CLI missing: apt-get update && apt-get install -y zstd" >&2
    exit 1
}

(cd "$ROOT" && cargo build --release --quiet --bin sparse)
SPARSE=${CARGO_TARGET_DIR:-$ROOT/target}/release/sparse

WORK=$(mktemp -d /tmp/sparse-compare.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

raw=$(stat -L -c %s "$FT")
base_raw=$(stat -L -c %s "$BASE")
want=$(sha256sum <"$FT" | cut -d' ' -f1)
cat "$BASE" "$FT" >/dev/null # warm the page cache
load0=$(cut -d' ' -f1-3 /proc/loadavg)

# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
new_bytes() { grep -o '"stored_bytes": *[0-9]*' "$WORK/last.out" | grep -o '[0-9]*$'; }

for run in $(seq 1 "$RUNS"); do
    echo "run $run of $RUNS" >&2
    rm -rf "${WORK:?}"/*

    timed cp cp "$FT" "$WORK/copy"
    rm -f "$WORK/copy"
    timed cp_sync sh -c 'cp "$1" "$2" && sync "$2"' sh "$FT" "$WORK/copy"
    rm -f "$WORK/copy"

    for level in 3 19; do
        timed "zstd$level" zstd -q -f -T0 "-$level" "$FT" -o "$WORK/ft.zst"
        add "zstd${level}_bytes" "$(stat -c %s "$WORK/ft.zst")"
        timed "unzstd$level" zstd -q -f -d -T0 "$WORK/ft.zst" -o "$WORK/ft.out"
        cmp -s "$FT" "$WORK/ft.out" || {
            echo "zstd round trip differs" >&2
            exit 1
        }
        rm -f "$WORK/ft.zst" "$WORK/ft.out"
    done

    # sparse: base, then the fine-tune as deltas on it.
    st=$WORK/store
    mkdir "$st"
    (cd "$st" && "$SPARSE" init >/dev/null)
    s0=$(store_bytes "$st")
    timed add_base "$SPARSE" -C "$st" --json add "$BASE" --name base
    add add_base_new "$(new_bytes)"
    s1=$(store_bytes "$st")
    timed commit_base "$SPARSE" -C "$st" commit -m base
    s2=$(store_bytes "$st")
    timed add_ft "$SPARSE" -C "$st" --json add "$FT" --name finetune --base base
    add add_ft_new "$(new_bytes)"
    s3=$(store_bytes "$st")
    timed commit_ft "$SPARSE" -C "$st" commit -m finetune
    s4=$(store_bytes "$st")
    timed checkout "$SPARSE" -C "$st" checkout finetune -o "$WORK/out"
    got=$(sha256sum <"$WORK/out/$(basename "$FT")" | cut -d' ' -f1)
    [[ $got == "$want" ]] || {
        echo "checkout sha256 $got differs from the input's $want" >&2
        exit 1
    }
    add store_empty "$s0"
    add grow_add_base $((s1 - s0))
    add grow_commit_base $((s2 - s1))
    add grow_add_ft $((s3 - s2))
    add grow_commit_ft $((s4 - s3))
    add store_total "$s4"

    # sparse: the fine-tune alone in an empty store (no base), like a single-file compressor.
    alone=$WORK/alone
    mkdir "$alone"
    (cd "$alone" && "$SPARSE" init >/dev/null)
    a0=$(store_bytes "$alone")
    timed add_alone "$SPARSE" -C "$alone" --json add "$FT" --name finetune
    add add_alone_new "$(new_bytes)"
    timed commit_alone "$SPARSE" -C "$alone" commit -m finetune
    add grow_alone $(($(store_bytes "$alone") - a0))
done

sum() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a + b}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
# Per-run sums for add + commit, so their median is a median of totals.
read -ra ab <<<"${samples[add_ft]}"
read -ra cb <<<"${samples[commit_ft]}"
for i in "${!ab[@]}"; do add ft_total "$(sum "${ab[$i]}" "${cb[$i]}")"; done
read -ra ab <<<"${samples[add_base]}"
read -ra cb <<<"${samples[commit_base]}"
for i in "${!ab[@]}"; do add base_total "$(sum "${ab[$i]}" "${cb[$i]}")"; done
read -ra ab <<<"${samples[add_alone]}"
read -ra cb <<<"${samples[commit_alone]}"
for i in "${!ab[@]}"; do add alone_total "$(sum "${ab[$i]}" "${cb[$i]}")"; done

z3=$(median zstd3_bytes)
z19=$(median zstd19_bytes)
gft=$(($(median grow_add_ft) + $(median grow_commit_ft)))
galone=$(median grow_alone)
gbase=$(($(median grow_add_base) + $(median grow_commit_base)))

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | head -1)
echo
echo "Data: fine-tune $FT ($raw bytes), base $BASE ($base_raw bytes)."
echo "sparse $commit${dirty:+ (src has uncommitted changes)}; zstd $(zstd --version | grep -o "v[0-9.]*" | head -1);" \
    "$(nproc) CPUs; $(lscpu | sed -n 's/^Model name: *//p');" \
    "$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM. Times: median of $RUNS runs (min–max), warm page cache."
echo "Load average (1, 5, 15 min) before the runs: $load0; after: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "Storing the fine-tune:"
echo
echo "| method | bytes stored | ratio to raw | store s | restore s |"
echo "|---|---:|---:|---:|---:|"
echo "| \`cp\` (raw) | $raw | 1.000 | $(median cp) ($(range cp)) | — |"
echo "| \`cp\` + \`sync FILE\` | $raw | 1.000 | $(median cp_sync) ($(range cp_sync)) | — |"
echo "| \`zstd -3 -T0\` | $z3 | $(ratio "$z3" "$raw") | $(median zstd3) ($(range zstd3)) | $(median unzstd3) ($(range unzstd3)) |"
echo "| \`zstd -19 -T0\` | $z19 | $(ratio "$z19" "$raw") | $(median zstd19) ($(range zstd19)) | $(median unzstd19) ($(range unzstd19)) |"
echo "| sparse, alone (add + commit, empty store) | $galone | $(ratio "$galone" "$raw") | $(median alone_total) ($(range alone_total)) | — |"
echo "| sparse, \`--base base\` (add + commit) | $gft | $(ratio "$gft" "$raw") | $(median ft_total) ($(range ft_total)) | $(median checkout) ($(range checkout)) |"
echo
echo "sparse step by step (store growth: \`du -sb .sparse\` after minus before; stored_bytes: what \`add --json\` reports):"
echo
echo "| step | median s (min–max) | store growth, bytes | ratio to that file's raw | stored_bytes |"
echo "|---|---:|---:|---:|---:|"
echo "| \`init\` (empty store) | — | $(median store_empty) | — | — |"
echo "| \`add base\` | $(median add_base) ($(range add_base)) | $(median grow_add_base) | $(ratio "$(median grow_add_base)" "$base_raw") | $(median add_base_new) |"
echo "| \`commit\` base | $(median commit_base) ($(range commit_base)) | $(median grow_commit_base) | — | — |"
echo "| \`add finetune --base base\` | $(median add_ft) ($(range add_ft)) | $(median grow_add_ft) | $(ratio "$(median grow_add_ft)" "$raw") | $(median add_ft_new) |"
echo "| \`commit\` fine-tune | $(median commit_ft) ($(range commit_ft)) | $(median grow_commit_ft) | — | — |"
echo "| \`checkout finetune\` (sha256 equal: yes) | $(median checkout) ($(range checkout)) | 0 | — | — |"
echo
echo "Base + fine-tune in one store: $(median store_total) bytes of .sparse for $((base_raw + raw)) raw bytes" \
    "($(ratio "$(median store_total)" "$((base_raw + raw))")); base alone grew it by $gbase."
