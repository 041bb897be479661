"""ZipLLM's BitX modelled, the published delta coder beside ZipNN: per tensor, the XOR of the
fine-tune's and the base's bit patterns, split into an exponent stream and a sign + mantissa
stream, each compressed with zstd -3. Also the plain reference of the issue's table: XOR in byte
planes at zstd -19. Ratios are over the raw bytes of the tensors both files share.
usage: python bitx.py BASE FT [bf16]"""
import sys

import numpy as np
import zstandard

from common import byte_planes, pair

z3 = zstandard.ZstdCompressor(level=3)
z19 = zstandard.ZstdCompressor(level=19)


def streams(x, w):
    """(exponent bytes, sign + mantissa bytes) of w-bit float patterns x (bf16 or fp32)."""
    u = x.astype(np.uint64)
    mant_bits = 7 if w == 16 else 23
    exp = ((u >> mant_bits) & 0xFF).astype(np.uint8)
    sm = ((u >> (w - 1)) << mant_bits) | (u & ((1 << mant_bits) - 1))
    planes = [((sm >> (8 * k)) & 0xFF).astype(np.uint8) for k in range((mant_bits + 1) // 8)]
    return exp.tobytes(), np.stack(planes, axis=1).tobytes()


raw = bitx = xor19 = 0
bf16 = "bf16" in sys.argv[3:]
for _, a, b, w in pair(sys.argv[1], sys.argv[2], bf16):
    raw += a.size * w // 8
    x = a ^ b
    bitx += sum(len(z3.compress(s)) for s in streams(x, w))
    xor19 += sum(min(len(z19.compress(p)), len(p)) for p in byte_planes(x, w))
print(f"{'bf16' if bf16 else 'fp32'}: raw {raw} bytes; BitX (XOR, exponent and sign+mantissa, "
      f"zstd -3) {bitx / raw:.4f}; XOR byte planes zstd -19 {xor19 / raw:.4f}")
