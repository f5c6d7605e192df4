#!/usr/bin/env python3
"""The numpy peer of `cargo bench -p forage --bench embed`: a BERT sentence-embedding forward
pass (all-MiniLM-L6-v2) in numpy, timed on the token ids the Rust bench sends.

It is its own implementation (it shares no code with tests/embed_reference.py, which is the
float64, one-text-at-a-time correctness reference): float32 like candle, batched with padding
to the batch's longest text and an attention mask, erf-GELU through a vectorised erf
(Abramowitz-Stegun 7.1.26, |error| <= 1.5e-7), masked mean pooling, L2 normalisation. numpy's
matrix products use its BLAS with its own threads, as candle uses its own.

Input, JSON on stdin:
  {"model_dir": DIR, "token_ids": [[ids...], ...], "batch_sizes": [1, 8, 32],
   "rounds": N, "check": K}
Output, JSON on stdout:
  {"seconds": {"1": best seconds over the rounds to embed every text, ...},
   "embeddings": [the first K texts' vectors, embedded in one batch]}
Needs: numpy.
"""

import json
import math
import os
import sys
import time

import numpy as np

ERF_P = np.float32(0.3275911)
ERF_A = [np.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)]
MASK_NEG = np.float32(-1e9)


# The safetensors reader of the embedding reference test (forage/tests/embed_reference.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from embed_reference import load_safetensors  # noqa: E402


def read_weights(path):
    """name -> float32 array (the test's reader keeps float64 for its exact reference)."""
    return {name: arr.astype(np.float32) for name, arr in load_safetensors(path).items()}


class Model:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        w = read_weights(os.path.join(model_dir, "model.safetensors"))
        self.eps = np.float32(cfg["layer_norm_eps"])
        self.heads = cfg["num_attention_heads"]
        self.word = w["embeddings.word_embeddings.weight"]
        self.pos = w["embeddings.position_embeddings.weight"]
        self.type0 = w["embeddings.token_type_embeddings.weight"][0]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."

            def lin(name):
                # Transposed once here so the hot loop is a plain x @ W.
                return (np.ascontiguousarray(w[p + name + ".weight"].T), w[p + name + ".bias"])

            def ln(name):
                return (w[p + name + ".weight"], w[p + name + ".bias"])

            # Q, K and V in one product.
            qkv_w = np.concatenate([lin(f"attention.self.{n}")[0] for n in ("query", "key", "value")], axis=1)
            qkv_b = np.concatenate([lin(f"attention.self.{n}")[1] for n in ("query", "key", "value")])
            self.layers.append(
                {
                    "qkv": (np.ascontiguousarray(qkv_w), qkv_b),
                    "attn_out": lin("attention.output.dense"),
                    "attn_ln": ln("attention.output.LayerNorm"),
                    "inter": lin("intermediate.dense"),
                    "out": lin("output.dense"),
                    "out_ln": ln("output.LayerNorm"),
                }
            )

    def layer_norm(self, x, wb):
        mean = x.mean(axis=-1, keepdims=True)
        centered = x - mean
        var = (centered * centered).mean(axis=-1, keepdims=True)
        return centered / np.sqrt(var + self.eps) * wb[0] + wb[1]

    def embed(self, batch):
        """Unit vectors for a list of token-id lists (padded here to the longest)."""
        n, length = len(batch), max(len(ids) for ids in batch)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        x = self.layer_norm(self.word[ids] + self.pos[:length] + self.type0, self.emb_ln)
        hidden = x.shape[-1]
        # Dense layers see (texts * tokens, hidden): one BLAS product, not one per text.
        x = x.reshape(n * length, hidden)
        head_dim = hidden // self.heads
        scale = np.float32(1.0 / math.sqrt(head_dim))
        bias = ((1.0 - mask) * MASK_NEG)[:, None, None, :]
        for layer in self.layers:
            qkv = x @ layer["qkv"][0] + layer["qkv"][1]
            qkv = qkv.reshape(n, length, 3, self.heads, head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(n * length, hidden)
            attn = ctx @ layer["attn_out"][0] + layer["attn_out"][1]
            x = self.layer_norm(attn + x, layer["attn_ln"])
            inter = gelu(x @ layer["inter"][0] + layer["inter"][1])
            x = self.layer_norm(inter @ layer["out"][0] + layer["out"][1] + x, layer["out_ln"])
        x = x.reshape(n, length, hidden)
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def erf(x):
    t = 1.0 / (1.0 + ERF_P * np.abs(x))
    poly = ((((ERF_A[4] * t + ERF_A[3]) * t + ERF_A[2]) * t + ERF_A[1]) * t + ERF_A[0]) * t
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


def gelu(x):
    return np.float32(0.5) * x * (np.float32(1.0) + erf(x * np.float32(1.0 / math.sqrt(2.0))))


def main():
    job = json.load(sys.stdin)
    model = Model(job["model_dir"])
    token_ids = job["token_ids"]
    model.embed(token_ids[:8])  # warm-up: page in the weights, start BLAS threads
    seconds = {}
    for size in job["batch_sizes"]:
        best = math.inf
        for _ in range(job["rounds"]):
            started = time.perf_counter()
            for at in range(0, len(token_ids), size):
                model.embed(token_ids[at : at + size])
            best = min(best, time.perf_counter() - started)
        seconds[str(size)] = best
    check = model.embed(token_ids[: job["check"]]).tolist()
    json.dump({"seconds": seconds, "embeddings": check}, sys.stdout)


if __name__ == "__main__":
    main()
