"""Cost of coding each difference as its bit length (entropy-coded, optionally with the base's
exponent or the previous length as context) plus the raw bits below the leading one.
usage: python bitlen.py BASE FT [bf16]"""
import sys

import numpy as np

from common import cond_entropy, entropy, pair, zigzag_delta

raw = 0
cost = {"bitlen": 0.0, "bitlen|exp": 0.0, "bitlen|prev": 0.0}
for _, a, b, w in pair(sys.argv[1], sys.argv[2], "bf16" in sys.argv):
    raw += a.size * w // 8
    z = zigzag_delta(a, b, w)
    bl = np.zeros(z.shape, dtype=np.int64)
    nz = z > 0
    bl[nz] = np.floor(np.log2(z[nz])).astype(np.int64) + 1
    rest = np.maximum(bl - 1, 0).sum()
    exp = (b >> (w - 9)) & 0xFF
    prev = np.concatenate([[0], bl[:-1]])
    cost["bitlen"] += entropy(bl) + rest
    cost["bitlen|exp"] += cond_entropy(bl, exp) + rest
    cost["bitlen|prev"] += cond_entropy(bl, prev) + rest
for k, v in cost.items():
    print(k, round(v / 8 / raw, 4))
