#!/usr/bin/env python3
"""ZipNN side of benches/codecs.sh: times ZipNN on one fine-tune file, alone and as deltas.

    python zipnn_bench.py --base BASE --ft FT --runs 5 --threads 2 --work DIR

Run with the Python of the virtual environment that codecs.sh makes (pip install zipnn). Prints
lines for the shell script to parse, on stdout:

    info KEY VALUE...          facts (ZipNN version, dtype used, threads, import time, ...)
    sample METRIC VALUE        one measurement (seconds or bytes) of one run

Three ways of storing the fine-tune FT are measured, RUNS times each, every one checked by the
sha256 of what decompression writes (outside the timed part):

zipnn        FT alone, the way ZipNN's own file scripts do it: read the whole file, one call
             ZipNN(bytearray_dtype=D, threads=T).compress(bytes), write the result. Decompression
             reads that, calls ZipNN(...).decompress and writes the file back.
stock_delta  ZipNN's own delta mode, ZipNN(delta_compressed_type="file").compress(FT bytes,
             delta_second_data=BASE path): XOR of the two whole files, then compressed. ZipNN
             raises ValueError when the two lengths differ; the message is reported and the row
             is skipped.
aligned      XOR delta with tensors aligned by name (not part of ZipNN): both safetensors headers
             are parsed; every tensor of FT that BASE has with the same dtype and shape is XORed
             in place with the base's bytes; everything else (FT's header, tensors new or
             changed in dtype or shape) stays as it is. The buffer thus has FT's length and
             layout and is compressed with ZipNN like `zipnn` above. Decompression undoes the
             XOR with BASE (reading FT's header from the decompressed bytes) and writes FT back.

D is the float dtype that holds most of FT's bytes (float32, bfloat16 or float16; ZipNN's byte API
needs one for the whole buffer). Times are wall seconds (time.perf_counter) from the start of
reading the input to the end of writing the output (page cache warm; each step starts after
os.sync() and touching --warm-mb MiB of memory, as benches/lib.sh's prefault does for the other
methods, and none flushes its own output, like zstd's CLI),
in this one Python process: interpreter start and `import zipnn` (which imports torch) are not
in them; the import time is reported once as `info import_s`.

ZipNN 0.5.4 compresses its input buffer in place (it scrambles even a `bytes` object it is
given), so every run reads the file afresh into its own buffer.
"""

import argparse
import hashlib
import json
import mmap
import os
import struct
import sys
import time

t_import = time.perf_counter()
import numpy as np  # noqa: E402
import zipnn  # noqa: E402

IMPORT_S = time.perf_counter() - t_import

DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
# Bytes per XOR step in the aligned delta's decompression (bounds its scratch memory).
XOR_BLOCK = 16 << 20


WARM_MB = 0  # --warm-mb


def settle():
    """Flushes dirty pages, then touches and frees WARM_MB MiB (see prefault in benches/lib.sh)."""
    os.sync()
    if WARM_MB > 0 and os.path.isdir("/dev/shm"):
        path = "/dev/shm/sparse-bench-prefault"
        block = bytes(1 << 20)
        with open(path, "wb") as f:
            for _ in range(WARM_MB):
                f.write(block)
        os.remove(path)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def emit(kind, key, *values):
    print(kind, key, *values, flush=True)


def read_all(path):
    """The whole file in a fresh bytearray (one readinto loop)."""
    size = os.stat(path).st_size
    buf = bytearray(size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        got = 0
        while got < size:
            n = f.readinto(view[got:])
            if not n:
                raise IOError(f"{path}: ends early")
            got += n
    return buf


def write_all(path, data):
    with open(path, "wb") as f:
        f.write(data)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 24)
            if not b:
                return h.hexdigest()
            h.update(b)


def parse_header(head):
    """{name: (dtype, shape, begin, end)} with absolute file offsets, from the file's first bytes."""
    (n,) = struct.unpack_from("<Q", head, 0)
    meta = json.loads(bytes(head[8 : 8 + n]))
    start = 8 + n
    out = {}
    for name, v in meta.items():
        if name == "__metadata__":
            continue
        b, e = v["data_offsets"]
        out[name] = (v["dtype"], tuple(v["shape"]), start + b, start + e)
    return out


def header_of(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        f.seek(0)
        return parse_header(f.read(8 + n))


def aligned_pairs(ft_hdr, base_hdr):
    """[(ft_begin, ft_end, base_begin)] of FT's tensors that BASE has with the same dtype and shape."""
    pairs = []
    for name, (dt, shape, b, e) in ft_hdr.items():
        other = base_hdr.get(name)
        if other and other[0] == dt and other[1] == shape:
            pairs.append((b, e, other[2]))
    pairs.sort()
    return pairs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--ft", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", required=True)
    ap.add_argument("--warm-mb", type=int, default=0)
    args = ap.parse_args()
    global WARM_MB
    WARM_MB = args.warm_mb

    ft_hdr = header_of(args.ft)
    base_hdr = header_of(args.base)
    by_dtype = {}
    for dt, _, b, e in ft_hdr.values():
        by_dtype[dt] = by_dtype.get(dt, 0) + e - b
    major = max(by_dtype, key=by_dtype.get)
    if major not in DTYPES:
        sys.exit(f"{args.ft}: most bytes are {major}, not a float dtype ZipNN's byte API takes")
    dtype = DTYPES[major]
    raw = os.stat(args.ft).st_size
    want = sha256_file(args.ft)
    pairs = aligned_pairs(ft_hdr, base_hdr)

    emit("info", "zipnn_version", version())
    emit("info", "import_s", f"{IMPORT_S:.3f}")
    emit("info", "dtype", dtype)
    emit("info", "threads", args.threads)
    emit("info", "aligned_tensors", len(pairs), "of", len(ft_hdr))
    emit("info", "aligned_bytes", sum(e - b for b, e, _ in pairs), "of", raw)

    def make(**kw):
        return zipnn.ZipNN(bytearray_dtype=dtype, threads=args.threads, **kw)

    znn = os.path.join(args.work, "ft.znn")
    out = os.path.join(args.work, "ft.out")

    def check(metric):
        got = sha256_file(out)
        if got != want:
            sys.exit(f"{metric}: decompressed sha256 {got} differs from the input's {want}")
        os.remove(out)

    # Stock delta: does ZipNN take this pair at all?
    stock_ok = os.stat(args.base).st_size == raw
    if not stock_ok:
        try:
            make(delta_compressed_type="file").compress(read_all(args.ft), delta_second_data=args.base)
            stock_ok = True  # a future version might accept it
        except ValueError as e:
            emit("info", "stock_delta_refused", f"ValueError: {e}")

    with open(args.base, "rb") as fb:
        base_map = mmap.mmap(fb.fileno(), 0, access=mmap.ACCESS_READ)
    base_view = np.frombuffer(base_map, dtype=np.uint8)
    scratch = np.empty(XOR_BLOCK, dtype=np.uint8)

    for run in range(1, args.runs + 1):
        log(f"  zipnn run {run} of {args.runs}")

        # FT alone.
        settle()
        t0 = time.perf_counter()
        comp = make().compress(read_all(args.ft))
        write_all(znn, comp)
        t1 = time.perf_counter()
        del comp
        emit("sample", "zipnn_c", f"{t1 - t0:.3f}")
        emit("sample", "zipnn_bytes", os.stat(znn).st_size)
        settle()
        t0 = time.perf_counter()
        dec = make().decompress(read_all(znn))
        write_all(out, dec)
        t1 = time.perf_counter()
        del dec
        emit("sample", "zipnn_d", f"{t1 - t0:.3f}")
        check("zipnn")

        # ZipNN's own delta mode (equal lengths only).
        if stock_ok:
            settle()
            t0 = time.perf_counter()
            comp = make(delta_compressed_type="file").compress(read_all(args.ft), delta_second_data=args.base)
            write_all(znn, comp)
            t1 = time.perf_counter()
            del comp
            emit("sample", "stock_c", f"{t1 - t0:.3f}")
            emit("sample", "stock_bytes", os.stat(znn).st_size)
            settle()
            t0 = time.perf_counter()
            dec = make(delta_compressed_type="file").decompress(read_all(znn), delta_second_data=args.base)
            write_all(out, dec)
            t1 = time.perf_counter()
            del dec
            emit("sample", "stock_d", f"{t1 - t0:.3f}")
            check("stock_delta")

        # XOR delta with tensors aligned by name.
        settle()
        t0 = time.perf_counter()
        buf = read_all(args.ft)
        view = np.frombuffer(buf, dtype=np.uint8)
        for b, e, bb in aligned_pairs(parse_header(buf), base_hdr):
            np.bitwise_xor(view[b:e], base_view[bb : bb + e - b], out=view[b:e])
        del view
        comp = make().compress(buf)
        write_all(znn, comp)
        t1 = time.perf_counter()
        del comp, buf
        emit("sample", "aligned_c", f"{t1 - t0:.3f}")
        emit("sample", "aligned_bytes", os.stat(znn).st_size)
        settle()
        t0 = time.perf_counter()
        dec = make().decompress(read_all(znn))
        dv = np.frombuffer(dec, dtype=np.uint8)
        with open(out, "wb") as f:
            pos = 0
            for b, e, bb in aligned_pairs(parse_header(dec), base_hdr):
                f.write(dv[pos:b])
                for s in range(b, e, XOR_BLOCK):
                    n = min(XOR_BLOCK, e - s)
                    np.bitwise_xor(dv[s : s + n], base_view[bb + s - b : bb + s - b + n], out=scratch[:n])
                    f.write(scratch[:n])
                pos = e
            f.write(dv[pos:])
        t1 = time.perf_counter()
        del dv, dec
        emit("sample", "aligned_d", f"{t1 - t0:.3f}")
        check("aligned")

    os.remove(znn)
    del base_view
    base_map.close()


def version():
    try:
        from importlib.metadata import version as v

        return v("zipnn")
    except Exception:  # noqa: BLE001
        return "unknown"


if __name__ == "__main__":
    main()
