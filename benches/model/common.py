"""Shared helpers of the codec models: read a safetensors file, entropies, zigzag deltas."""
import json
import struct

import numpy as np


def load(path):
    """{name: (dtype, shape, bytes)} of a safetensors file (the __metadata__ entry dropped)."""
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    data = b[8 + n:]
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}


def entropy(x):
    """Order-0 entropy of the values of x, in bits (total, not per value)."""
    _, c = np.unique(x, return_counts=True)
    return -(c * np.log2(c / c.sum())).sum()


def cond_entropy(x, ctx):
    """Entropy of x given ctx, in bits: the sum of the entropy of x within each context."""
    order = np.argsort(ctx, kind="stable")
    xs, cs = x[order], ctx[order]
    bounds = np.flatnonzero(np.diff(cs)) + 1
    return sum(entropy(seg) for seg in np.split(xs, bounds))


def rne_bf16(bits32):
    """bf16 bit patterns of fp32 bit patterns, round to nearest even (int64 arrays)."""
    return (bits32 + 0x7FFF + ((bits32 >> 16) & 1)) >> 16


def pair(base_path, ft_path, bf16=False):
    """Yield (name, new, old, width_bits) for tensors in both files with the same byte length,
    as int64 bit patterns; with bf16, both rounded from fp32 to bf16 first."""
    base, ft = load(base_path), load(ft_path)
    for k, (dt, _, fb) in ft.items():
        if k not in base or len(base[k][2]) != len(fb) or dt != "F32":
            continue
        a = np.frombuffer(fb, dtype=np.uint32).astype(np.int64)
        b = np.frombuffer(base[k][2], dtype=np.uint32).astype(np.int64)
        if bf16:
            yield k, rne_bf16(a), rne_bf16(b), 16
        else:
            yield k, a, b, 32


def byte_planes(x, w):
    """The w // 8 byte planes of w-bit integers x, lowest first, each as bytes."""
    u = x.astype(np.uint64)
    return [((u >> (8 * k)) & 0xFF).astype(np.uint8).tobytes() for k in range(w // 8)]


def zigzag_delta(a, b, w):
    """Zigzag-coded wrapping difference a - b of w-bit integers (what the codec `sub` stores)."""
    m = 1 << w
    d = (a - b) % m
    d = np.where(d >= m // 2, d - m, d)
    return np.where(d >= 0, 2 * d, -2 * d - 1)
