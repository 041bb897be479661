"""Coding each byte plane of the differences with an order-0 coder per context (the base's
exponent), instead of grouping by that context and coding one table per plane: the bound such a
context-switching rANS would reach, in 1 MiB blocks as the codec cuts them, with and without the
cost of its tables (each symbol a table lists, at 1.5 bytes).
usage: python plane_context.py BASE FT [bf16]"""
import sys

import numpy as np

from common import entropy, pair, zigzag_delta

BLOCK = 1 << 20


raw, plain, ctx, symbols = 0, 0.0, 0.0, 0
for _, a, b, w in pair(sys.argv[1], sys.argv[2], "bf16" in sys.argv):
    width = w // 8
    raw += a.size * width
    z = zigzag_delta(a, b, w).astype(np.uint64)
    key = (b >> (w - 9)) & 0xFF
    n = BLOCK // width
    for s in range(0, z.size, n):
        zz, kk = z[s:s + n], key[s:s + n]
        order = np.argsort(kk, kind="stable")
        bounds = np.flatnonzero(np.diff(kk[order])) + 1
        for p in range(width):
            plane = ((zz >> (8 * p)) & 0xFF).astype(np.int64)
            plain += entropy(plane)
            for part in np.split(plane[order], bounds):
                ctx += entropy(part)
                symbols += len(np.unique(part))
print("planes, one table each: %.4f; a table per exponent: %.4f, with its tables %.4f"
      % (plain / 8 / raw, ctx / 8 / raw, (ctx / 8 + 1.5 * symbols) / raw))
