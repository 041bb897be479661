"""Order-0 entropy of each byte plane of an fp32 file, plain and with the sign bit rotated to
the bottom: the bound a per-plane entropy coder can reach on a model alone.
usage: python base_planes.py FILE"""
import sys

import numpy as np

from common import load


def h(x):
    c = np.bincount(x, minlength=256).astype(float)
    c = c[c > 0]
    return -(c * np.log2(c / c.sum())).sum()


raw, plain, rot = 0, [0.0] * 4, [0.0] * 4
for _, (dt, _, fb) in load(sys.argv[1]).items():
    if dt != "F32":
        continue
    x = np.frombuffer(fb, dtype=np.uint32)
    r = ((x << 1) | (x >> 31)).astype(np.uint32)
    raw += len(fb)
    for i in range(4):
        plain[i] += h(((x >> (8 * i)) & 0xFF).astype(np.int64))
        rot[i] += h(((r >> (8 * i)) & 0xFF).astype(np.int64))
print("plain planes", [round(t / 2 / raw, 3) for t in plain], "sum", round(sum(plain) / 8 / raw, 4))
print("sign rotated", [round(t / 2 / raw, 3) for t in rot], "sum", round(sum(rot) / 8 / raw, 4))
