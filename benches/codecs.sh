#!/usr/bin/env bash
# Codecs side by side: cp, zstd -3, zstd -19, ZipNN (alone and as deltas) and sparse, storing one
# fine-tune file, on three data sets in one run.
#
#   benches/codecs.sh             # RUNS=5, RUNS_SLOW=3, SIZE_GB=1: about 7.5 min on 2 cores
#
# Data sets (SETS="fp32 bf16 gen" picks and orders them):
#   fp32  the real MiniLM pair from scripts/fetch-testdata.sh
#         (${SPARSE_TESTDATA:-~/.cache/sparse-testdata}/{base,finetune}.safetensors; BASE=... FT=...)
#   bf16  the same pair, both files rounded to bf16 by examples/to_bf16.rs
#   gen   a Llama-7B-shaped bf16 base of SIZE_GB (default 1) decimal GB from examples/gen_model.rs
#         (--seed SEED, default 1) and a fine-tune of it (--seed SEED+1 --noise NOISE, default 1e-2)
#
# For each set the fine-tune file is stored by every method below; each time is the median of
# RUNS runs (min–max), with the page cache warm (inputs are read once first):
#   cp              cp FT COPY (a copy is its own restore: the same time is shown in both columns)
#   zstd -3, -19    zstd -q -f -T0 -LEVEL FT -o OUT; zstd -q -f -d -T0 OUT -o BACK; checked with cmp.
#                   zstd -19 runs RUNS_SLOW times only (about 20 s a run on the fp32 file here), and
#                   not at all on files over ZSTD19_MAX_MB MB (default 200; 0 = no limit): on the
#                   1.3 GB generated file one run would take about 9 minutes on 2 cores.
#   ZipNN           benches/zipnn_bench.py, in a virtual environment made here (ZIPNN_VENV, default
#                   /tmp/sparse-bench-venv) with `pip install zipnn==$ZIPNN_VERSION` (default 0.5.4;
#                   ZIPNN_VERSION= installs the newest). ZipNN(bytearray_dtype=D, threads=$(nproc))
#                   on the whole file; ZipNN's own delta mode against the base file (it refuses
#                   files of different lengths: the message is printed); and an XOR delta with
#                   tensors aligned by name, compressed with ZipNN. See that file's docstring.
#   sparse          per run a fresh store: add base, commit (not timed); then add FT --name finetune
#                   --base base and commit (timed together; size: growth of `du -sb .sparse`), and
#                   checkout finetune -o OUT (timed; sha256 checked against FT). The base's source
#                   file is in place, so both read the base's bytes from it (a known copy). Then
#                   the same in a second store whose copy records are deleted before each timed
#                   step: the base is decoded from its blobs. SPARSE_BIN=PATH measures that
#                   binary instead of this tree's build. Each run's stores are kept until the
#                   script ends (why: see the loop); the generated set keeps about 2.7 GB a run.
# Every timed step starts after a `sync` and a prefault (benches/lib.sh). Size ratio: bytes
# stored over FT's raw size. Prints Markdown tables, the targets sparse is held to, and the
# machine.
#
# Needs: the zstd CLI (installed with apt-get when missing and running as root), python3 with
# venv, and network access to PyPI for the first run (zipnn pulls in torch: about 5 GB).
set -euo pipefail

RUNS=${RUNS:-5}
RUNS_SLOW=${RUNS_SLOW:-3}
ZSTD19_MAX_MB=${ZSTD19_MAX_MB:-200}
SETS=${SETS:-fp32 bf16 gen}
SIZE_GB=${SIZE_GB:-1}
SEED=${SEED:-1}
NOISE=${NOISE:-1e-2}
DATA=${SPARSE_TESTDATA:-$HOME/.cache/sparse-testdata}
# The size targets 0.36 and 0.165 are the real pair's (a third and a quarter below the best
# published coder on it); for another pair the bar is drawn from ZipNN's aligned XOR delta.
[[ -z ${BASE:-}${FT:-} ]] && own_pair=yes || own_pair=no
BASE=${BASE:-$DATA/base.safetensors}
FT=${FT:-$DATA/finetune.safetensors}
ZIPNN_VENV=${ZIPNN_VENV:-/tmp/sparse-bench-venv}
ZIPNN_VERSION=${ZIPNN_VERSION-0.5.4}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
start=$SECONDS
if [[ " $SETS " == *" fp32 "* || " $SETS " == *" bf16 "* ]]; then
    for f in "$BASE" "$FT"; do
        [[ -f $f ]] || {
            echo "missing $f: run scripts/fetch-testdata.sh" >&2
            exit 1
        }
    done
fi

if ! command -v zstd >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "installing the zstd CLI" >&2
        apt-get update -qq && apt-get install -y -qq zstd >/dev/null
    else
        echo "zstd CLI missing: apt-get update && apt-get install -y zstd" >&2
        exit 1
    fi
fi

# ZipNN in its own virtual environment, made once and reused.
PY=$ZIPNN_VENV/bin/python
want_zipnn=zipnn${ZIPNN_VERSION:+==$ZIPNN_VERSION}
if ! "$PY" -c "import importlib.metadata as m, sys; v = m.version('zipnn'); sys.exit(0 if '$ZIPNN_VERSION' in ('', v) else 1)" 2>/dev/null; then
    echo "making $ZIPNN_VENV and installing $want_zipnn (pulls in torch; minutes the first time)" >&2
    t0=$SECONDS
    python3 -m venv "$ZIPNN_VENV"
    "$PY" -m pip install --quiet "$want_zipnn" >&2
    echo "installed in $((SECONDS - t0)) s" >&2
fi

WORK=$(mktemp -d /tmp/sparse-codecs.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/data" "$WORK/tmp" "$WORK/bin"

# Build, then copy the binaries and note the revision at once: a rebuild in the tree while this
# runs must not change what is measured.
(cd "$ROOT" && cargo build --release --quiet --bin sparse --example gen_model --example to_bf16)
cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/sparse" "${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/gen_model" "${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/to_bf16" "$WORK/bin/"
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | head -1)
if [[ -n ${SPARSE_BIN:-} ]]; then
    # Another build of sparse (an older revision, say) in place of this tree's.
    cp "$SPARSE_BIN" "$WORK/bin/sparse"
    commit="binary $SPARSE_BIN"
    dirty=
fi
SPARSE=$WORK/bin/sparse
GEN=$WORK/bin/gen_model
TO_BF16=$WORK/bin/to_bf16
T=$WORK/tmp

# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
declare -A info    # SET.KEY -> text
has() { [[ -n ${samples[$1]:-} ]]; }
count() { tr ' ' '\n' <<<"${samples[$1]}" | grep -c .; }
cell() { if has "$1"; then echo "$(median "$1") ($(range "$1"))"; else echo "—"; fi; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }

# set_aside NAME: moves the stores of the last run, if any, to $WORK/kept/NAME, out of the page
# cache. They are not deleted: ext4 skips inodes freed in the last minute when it allocates new
# ones, checking each, so deleting a store's hundreds of files made every file the next run's
# `add` created cost a scan (a tenth of the bf16 pair's add, `perf record`). Dropped from the
# page cache, they take no memory from the runs after; they go with $WORK at the end.
set_aside() {
    if [[ -d $T/store ]]; then
        mkdir -p "$WORK/kept/$1"
        mv "$T/store" "$T/store-cold" "$WORK/kept/$1/"
        sync
        evict "$WORK/kept/$1"
    fi
}

# bench SET BASE_FILE FT_FILE: every method on FT_FILE, samples under SET.*
bench() {
    local set=$1 base=$2 ft=$3 raw
    raw=$(stat -L -c %s "$ft")
    info[$set.raw]=$raw
    info[$set.base_raw]=$(stat -L -c %s "$base")
    info[$set.ft]=$ft
    info[$set.base]=$base
    local want
    want=$(sha256sum <"$ft" | cut -d' ' -f1)
    cat "$base" "$ft" >/dev/null # warm the page cache
    WARM_MB=$(warm_mb "$base" "$ft")
    local slow=yes
    if ((ZSTD19_MAX_MB > 0 && raw > ZSTD19_MAX_MB * 1000000)); then slow=no; fi
    info[$set.load0]=$(cut -d' ' -f1-3 /proc/loadavg)

    for run in $(seq 1 "$RUNS"); do
        echo "$set: run $run of $RUNS" >&2
        set_aside "$set-$run"
        rm -rf "${T:?}"/*

        timed "$set.cp" cp "$ft" "$T/copy"
        rm -f "$T/copy"

        for level in 3 19; do
            if ((level == 19)) && [[ $slow == no || $run -gt $RUNS_SLOW ]]; then continue; fi
            timed "$set.zstd${level}_c" zstd -q -f -T0 "-$level" "$ft" -o "$T/ft.zst"
            add "$set.zstd${level}_bytes" "$(stat -c %s "$T/ft.zst")"
            timed "$set.zstd${level}_d" zstd -q -f -d -T0 "$T/ft.zst" -o "$T/ft.out"
            cmp -s "$ft" "$T/ft.out" || {
                echo "zstd -$level round trip differs" >&2
                exit 1
            }
            rm -f "$T/ft.zst" "$T/ft.out"
        done

        # sparse: the base in a fresh store (not timed), then the fine-tune as deltas on it.
        local st=$T/store
        mkdir "$st"
        (cd "$st" && "$SPARSE" init >/dev/null)
        timed "$set.sparse_add_base" "$SPARSE" -C "$st" add "$base" --name base
        timed "$set.sparse_commit_base" "$SPARSE" -C "$st" commit -m base
        local s0 s1
        s0=$(store_bytes "$st")
        timed "$set.sparse_add" "$SPARSE" -C "$st" add "$ft" --name finetune --base base
        timed "$set.sparse_commit" "$SPARSE" -C "$st" commit -m finetune
        s1=$(store_bytes "$st")
        add "$set.sparse_bytes" $((s1 - s0))
        timed "$set.sparse_d" "$SPARSE" -C "$st" checkout finetune -o "$T/out"
        local got
        got=$(sha256sum <"$T/out/$(basename "$ft")" | cut -d' ' -f1)
        [[ $got == "$want" ]] || {
            echo "$set: checkout sha256 $got differs from the input's $want" >&2
            exit 1
        }

        # The same with no known copy of the base: its chunks are decoded from the store.
        local cold=$T/store-cold
        mkdir "$cold"
        (cd "$cold" && "$SPARSE" init >/dev/null)
        "$SPARSE" -C "$cold" add "$base" --name base >/dev/null
        "$SPARSE" -C "$cold" commit -m base >/dev/null
        rm -rf "$cold/.sparse/sparse/copies"
        timed "$set.cold_add" "$SPARSE" -C "$cold" add "$ft" --name finetune --base base
        timed "$set.cold_commit" "$SPARSE" -C "$cold" commit -m finetune
        rm -rf "$cold/.sparse/sparse/copies"
        timed "$set.cold_d" "$SPARSE" -C "$cold" checkout finetune -o "$T/out-cold"
        got=$(sha256sum <"$T/out-cold/$(basename "$ft")" | cut -d' ' -f1)
        [[ $got == "$want" ]] || {
            echo "$set: checkout from blobs: sha256 $got differs from the input's $want" >&2
            exit 1
        }
    done
    # add + commit per run, so that the median is a median of totals.
    local -a a c
    read -ra a <<<"${samples[$set.sparse_add]}"
    read -ra c <<<"${samples[$set.sparse_commit]}"
    for i in "${!a[@]}"; do add "$set.sparse_c" "$(awk -v x="${a[$i]}" -v y="${c[$i]}" 'BEGIN {printf "%.3f", x + y}')"; done
    read -ra a <<<"${samples[$set.cold_add]}"
    read -ra c <<<"${samples[$set.cold_commit]}"
    for i in "${!a[@]}"; do add "$set.cold_c" "$(awk -v x="${a[$i]}" -v y="${c[$i]}" 'BEGIN {printf "%.3f", x + y}')"; done

    # ZipNN: all runs in one Python process (torch is imported once).
    set_aside "$set-last"
    rm -rf "${T:?}"/*
    echo "$set: ZipNN, $RUNS runs" >&2
    "$PY" "$ROOT/benches/zipnn_bench.py" --base "$base" --ft "$ft" --runs "$RUNS" --threads "$(nproc)" \
        --work "$T" --warm-mb "$WARM_MB" >"$WORK/zipnn.out" 2> >(grep -v -e FutureWarning -e 'warnings.warn' >&2)
    local kind key rest
    while read -r kind key rest; do
        case $kind in
        sample) add "$set.$key" "$rest" ;;
        info) info[$set.$key]=$rest ;;
        esac
    done <"$WORK/zipnn.out"
    info[$set.load1]=$(cut -d' ' -f1-3 /proc/loadavg)
}

# row SET LABEL PREFIX: a table row from SET.PREFIX_{bytes,c,d}
row() {
    local set=$1 label=$2 p=$3 raw=${info[$1.raw]}
    local r="—"
    if has "$set.${p}_bytes"; then r=$(ratio "$(median "$set.${p}_bytes")" "$raw"); fi
    echo "| $label | $r | $(cell "$set.${p}_c") | $(cell "$set.${p}_d") |"
}

# verdict SET: where sparse meets or misses its targets on SET.
verdict() {
    local set=$1 raw=${info[$1.raw]}
    local sr sc sd cp zc zd
    sr=$(ratio "$(median "$set.sparse_bytes")" "$raw")
    sc=$(median "$set.sparse_c")
    sd=$(median "$set.sparse_d")
    cp=$(median "$set.cp")
    zc=$(median "$set.zipnn_c")
    zd=$(median "$set.zipnn_d")
    meets() { awk -v a="$1" -v b="$2" 'BEGIN {print (a <= b) ? "**met**" : "**missed**"}'; }
    echo "| target | sparse | bound | |"
    echo "|---|---:|---:|---|"
    local share bound
    case $set.$own_pair in
    fp32.yes) echo "| size ratio ≤ 0.36 | $sr | 0.36 | $(meets "$sr" 0.36) |" ;;
    bf16.yes) echo "| size ratio ≤ 0.165 | $sr | 0.165 | $(meets "$sr" 0.165) |" ;;
    fp32.no | bf16.no)
        share=$([[ $set == fp32 ]] && echo 2/3 || echo 3/4)
        bound=$(awk -v b="$(median "$set.aligned_bytes")" -v r="$raw" -v s="$share" \
            'BEGIN {split(s, f, "/"); printf "%.3f", b / r * f[1] / f[2]}')
        echo "| size ratio ≤ $share of ZipNN's aligned XOR delta (BitX: benches/model/bitx.py) | $sr | $bound | $(meets "$sr" "$bound") |"
        ;;
    esac
    echo "| checkout ≤ 2 × cp | $sd s | $(awk -v c="$cp" 'BEGIN {printf "%.3f", 2 * c}') s | $(meets "$sd" "$(awk -v c="$cp" 'BEGIN {print 2 * c}')") |"
    echo "| add + commit < ZipNN compression of the fine-tune alone | $sc s | $zc s | $(meets "$sc" "$zc") |"
    echo "| checkout < ZipNN decompression of the fine-tune alone | $sd s | $zd s | $(meets "$sd" "$zd") |"
    local kc kd
    kc=$(median "$set.cold_c")
    kd=$(median "$set.cold_d")
    echo "| the same three, base decoded from its blobs | $kd s; $kc s; $kd s | $(awk -v c="$cp" 'BEGIN {printf "%.3f", 2 * c}') s; $zc s; $zd s | $(meets "$kd" "$(awk -v c="$cp" 'BEGIN {print 2 * c}')"); $(meets "$kc" "$zc"); $(meets "$kd" "$zd") |"
}

for set in $SETS; do
    case $set in
    fp32) bench fp32 "$BASE" "$FT" ;;
    bf16)
        mkdir -p "$WORK/data/bf16"
        "$TO_BF16" "$BASE" "$WORK/data/bf16/base.safetensors"
        "$TO_BF16" "$FT" "$WORK/data/bf16/finetune.safetensors"
        bench bf16 "$WORK/data/bf16/base.safetensors" "$WORK/data/bf16/finetune.safetensors"
        ;;
    gen)
        echo "generating a $SIZE_GB GB bf16 base and fine-tune" >&2
        "$GEN" --out "$WORK/data/gen/base" --size-gb "$SIZE_GB" --dtype bf16 --seed "$SEED"
        "$GEN" --out "$WORK/data/gen/finetune" --seed $((SEED + 1)) --noise "$NOISE" \
            --finetune-of "$WORK/data/gen/base" 2>"$WORK/gen.err"
        cat "$WORK/gen.err" >&2
        info[gen.changed]=$(grep -o '[0-9]* of [0-9]* float elements changed, [0-9.]*%' "$WORK/gen.err")
        bench gen "$WORK/data/gen/base/model.safetensors" "$WORK/data/gen/finetune/model.safetensors"
        rm -rf "$WORK/data/gen"
        ;;
    *)
        echo "unknown set $set (fp32, bf16, gen)" >&2
        exit 2
        ;;
    esac
done

first=${SETS%% *}
echo
echo "Machine: $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM;" \
    "$(uname -sr)."
echo "sparse $commit${dirty:+ (src had uncommitted changes)} (built when the script started); zstd $(zstd --version | grep -o 'v[0-9.]*' | head -1);" \
    "ZipNN ${info[$first.zipnn_version]} (Python $("$PY" -c 'import platform; print(platform.python_version())'))," \
    "ZipNN(bytearray_dtype=D, threads=${info[$first.threads]}), D the file's float dtype;" \
    "import of zipnn (torch included): ${info[$first.import_s]} s, not in the times."
echo "Times: median of $RUNS runs (min–max), zstd -19 of $RUNS_SLOW; warm page cache; seconds of wall time."

declare -A title=(
    [fp32]="Real pair, fp32"
    [bf16]="Real pair rounded to bf16 (examples/to_bf16.rs)"
    [gen]="Generated 7B-shaped bf16 family (gen_model --size-gb $SIZE_GB --seed $SEED; fine-tune --seed $((SEED + 1)) --noise $NOISE)"
)
for set in $SETS; do
    echo
    echo "### ${title[$set]}"
    echo
    echo "Fine-tune: ${info[$set.raw]} bytes; base: ${info[$set.base_raw]} bytes." \
        "Tensors aligned by name: ${info[$set.aligned_tensors]}, ${info[$set.aligned_bytes]} bytes." \
        "ZipNN dtype: ${info[$set.dtype]}.${info[$set.changed]:+ Elements changed by the fine-tune: ${info[$set.changed]}.}"
    echo "Load average (1, 5, 15 min) before: ${info[$set.load0]}; after: ${info[$set.load1]}."
    echo
    echo "| method | size ratio | compress s | decompress s |"
    echo "|---|---:|---:|---:|"
    echo "| \`cp\` | 1.000 | $(cell "$set.cp") | $(cell "$set.cp") |"
    row "$set" "\`zstd -3 -T0\`" zstd3
    if has "$set.zstd19_c"; then
        n=$(count "$set.zstd19_c")
        row "$set" "\`zstd -19 -T0\` ($n run$( ((n == 1)) || echo s))" zstd19
    else
        if ((RUNS_SLOW < 1)); then why="RUNS_SLOW=$RUNS_SLOW"; else why="file over ZSTD19_MAX_MB=$ZSTD19_MAX_MB"; fi
        echo "| \`zstd -19 -T0\` | skipped: $why | — | — |"
    fi
    row "$set" "ZipNN, fine-tune alone" zipnn
    if has "$set.stock_c"; then
        row "$set" "ZipNN delta (its own, whole-file XOR with the base)" stock
    else
        echo "| ZipNN delta (its own) | refused: ${info[$set.stock_delta_refused]:-?} | — | — |"
    fi
    row "$set" "ZipNN, XOR delta with tensors aligned by name" aligned
    echo "| sparse \`--base base\` (add + commit; checkout) | $(ratio "$(median "$set.sparse_bytes")" "${info[$set.raw]}") | $(cell "$set.sparse_c") | $(cell "$set.sparse_d") |"
    echo "| sparse, the same with no known copy of the base (decoded from its blobs) | same | $(cell "$set.cold_c") | $(cell "$set.cold_d") |"
    echo
    verdict "$set"
done
echo
echo "Total runtime of benches/codecs.sh: $((SECONDS - start)) s."
