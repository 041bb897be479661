"""The codec subctx modelled: zigzag differences of each 4 MiB chunk sorted by k bits of the
base after the sign, byte planes, zstd per plane (raw if smaller); for several k and levels.
usage: python context_bits.py BASE FT [bf16] [LEVEL]"""
import sys

import numpy as np
import zstandard

from common import byte_planes, pair, zigzag_delta

level = int(sys.argv[-1]) if sys.argv[-1].isdigit() else 3
zc = zstandard.ZstdCompressor(level=level)


def planes_size(z, w):
    return sum(min(len(zc.compress(p)), len(p)) for p in byte_planes(z, w))


raw, res = 0, {}
for _, a, b, w in pair(sys.argv[1], sys.argv[2], "bf16" in sys.argv):
    raw += a.size * w // 8
    z = zigzag_delta(a, b, w)
    n = (4 << 20) // (w // 8)
    for k in [0, 6, 8, 10, 11, 12, 14]:
        for s in range(0, z.size, n):
            zz = z[s:s + n]
            if k:
                zz = zz[np.argsort((b[s:s + n] >> (w - 1 - k)) & ((1 << k) - 1), kind="stable")]
            res[k] = res.get(k, 0) + planes_size(zz, w)
print("level", level, {("none" if k == 0 else f"{k} bits"): round(v / raw, 4) for k, v in res.items()})
