"""Order-0 entropy of the differences per tensor, alone and given the base's exponent (and three
leading mantissa bits): a bound for coders of the difference values.
usage: python value_entropy.py BASE FT [bf16]"""
import sys

from common import cond_entropy, entropy, pair

raw, h0, h1, h2 = 0, 0.0, 0.0, 0.0
for _, a, b, w in pair(sys.argv[1], sys.argv[2], "bf16" in sys.argv):
    raw += a.size * w // 8
    d = a - b
    h0 += entropy(d)
    h1 += cond_entropy(d, (b >> (w - 9)) & 0xFF)
    h2 += cond_entropy(d, (b >> (w - 12)) & 0x7FF)
print("H(d)=%.4f H(d|exp)=%.4f H(d|exp,m3)=%.4f" % (h0 / 8 / raw, h1 / 8 / raw, h2 / 8 / raw))
