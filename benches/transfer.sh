#!/usr/bin/env bash
# Transfers of the real pair (all-MiniLM-L6-v2 and its SRE fine-tune, scripts/fetch-testdata.sh)
# over loopback: push the base, push the fine-tune (only its delta travels), push again
# (nothing travels), clone; to a `sparse serve` and to s3s-fs (SPARSE_S3S_FS or on PATH).
# Checks the clones bit-exact.
#
#   benches/transfer.sh                       # RUNS=3; SPARSE_BIN=... to time another build
#
# Prints a Markdown table: step, bytes sent, bytes skipped, objects, median seconds (min–max).
set -euo pipefail

RUNS=${RUNS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
source "$ROOT/benches/lib.sh"
if [ -z "${SPARSE_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet --bin sparse)
    SPARSE_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/sparse
fi
S3S=${SPARSE_S3S_FS:-$(command -v s3s-fs)}
DATA=$("$ROOT/scripts/fetch-testdata.sh" | tail -n 1)
S=$SPARSE_BIN

mkdir -p "$WORK/src/base" "$WORK/src/sre"
cp -L "$DATA/base.safetensors" "$WORK/src/base/model.safetensors"
cp -L "$DATA/finetune.safetensors" "$WORK/src/sre/model.safetensors"
"$S" -C "$WORK" init >/dev/null
"$S" -C "$WORK" add "$WORK/src/base" --name base >/dev/null
"$S" -C "$WORK" commit -m base >/dev/null
"$S" -C "$WORK" add "$WORK/src/sre" --name sre --base base >/dev/null
"$S" -C "$WORK" commit -m sre >/dev/null

declare -A report # STEP -> "sent skipped objects" of the last run
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['bytes_sent'], r['bytes_skipped'], r['objects_sent'])" "$1"; }
step() { # step NAME COMMAND...: timed, with its report kept
    local name=$1
    shift
    timed "$name" "$@"
    report[$name]=$(field "$WORK/last.out")
}

echo "write bench-token" >"$WORK/tokens"
export SPARSE_TOKEN=bench-token AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key
export AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
for run in $(seq "$RUNS"); do
    rm -rf "$WORK/http" "$WORK/s3" "$WORK/c-http" "$WORK/c-s3"
    mkdir -p "$WORK/http" "$WORK/s3/bucket"
    "$S" -C "$WORK/http" init >/dev/null
    "$S" -C "$WORK/http" serve --bind 127.0.0.1:0 --token-file "$WORK/tokens" >"$WORK/serve.out" &
    server=$!
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$S3S" --host 127.0.0.1 --port "$port" --access-key bench --secret-key bench-secret-key "$WORK/s3" >/dev/null 2>&1 &
    s3=$!
    export AWS_ENDPOINT_URL=http://127.0.0.1:$port
    until grep -q listening "$WORK/serve.out" 2>/dev/null; do sleep 0.1; done
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done
    http=$(sed 's/listening on //' "$WORK/serve.out")
    for kind in http s3; do
        url=$http
        [ $kind = s3 ] && url=s3://bucket/models
        step "$kind push base" "$S" -C "$WORK" --json push "$url" base
        step "$kind push fine-tune" "$S" -C "$WORK" --json push "$url" sre
        step "$kind push again" "$S" -C "$WORK" --json push "$url"
        step "$kind clone" "$S" --json clone "$url" "$WORK/c-$kind"
        "$S" -C "$WORK/c-$kind" checkout sre -o "$WORK/c-$kind/out" >/dev/null
        cmp "$WORK/c-$kind/out/model.safetensors" "$WORK/src/sre/model.safetensors"
    done
    kill $server $s3
    wait $server $s3 2>/dev/null || true
done

echo "| step | bytes sent | bytes skipped | objects sent | seconds, median (min–max) of $RUNS |"
echo "|---|---:|---:|---:|---|"
for kind in http s3; do
    for s in "push base" "push fine-tune" "push again" "clone"; do
        read -r sent skipped objects <<<"${report[$kind $s]}"
        echo "| $kind $s | $sent | $skipped | $objects | $(median "$kind $s") ($(range "$kind $s")) |"
    done
done
