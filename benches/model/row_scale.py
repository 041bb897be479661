"""Does the fine-tune's embedding equal the base scaled per row (weight decay)? Fits a scale per
row and counts how many elements the prediction hits within a few units of the bit pattern.
usage: python row_scale.py BASE FT"""
import sys

import numpy as np

from common import load

k = "embeddings.word_embeddings.weight"
base, ft = load(sys.argv[1]), load(sys.argv[2])
shape = ft[k][1]
a = np.frombuffer(ft[k][2], dtype=np.float32).reshape(shape)
b = np.frombuffer(base[k][2], dtype=np.float32).reshape(shape)
with np.errstate(divide="ignore", invalid="ignore"):
    s = np.median(np.where(b != 0, a / b, 1.0), axis=1)
print("row scale quantiles", np.quantile(s, [0, 0.05, 0.5, 0.95, 1]))
pred = (b * s[:, None].astype(np.float32)).astype(np.float32)
res = a.view(np.int32).astype(np.int64) - pred.view(np.int32).astype(np.int64)
for t in (0, 1, 4):
    print(f"|residual| <= {t}:", round(float((np.abs(res) <= t).mean()), 4))
d = a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64)
print("difference quantiles", np.quantile(d, [0.01, 0.25, 0.5, 0.75, 0.99]))
