#!/usr/bin/env python3
"""Reference sentence embeddings for forage/tests/embed_reference.rs.

An independent BERT forward pass in numpy only: it reads model.safetensors by parsing the
format by hand (8-byte little-endian header length, JSON header, raw little-endian tensors),
runs the encoder on token ids given by the Rust test (so tokenization is shared and the
forward pass is what is compared), mean-pools over all tokens (there is no padding: one text
at a time), L2-normalises, and prints the embeddings as a JSON list of lists.

Usage: embed_reference.py MODEL_DIR TOKEN_IDS_JSON
  TOKEN_IDS_JSON is a JSON list of lists of token ids, one list per text.
Needs: numpy.
"""

import json
import math
import os
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "I64": np.int64}


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = DTYPES.get(info["dtype"])
        if dtype is None:
            raise SystemExit(f"unsupported dtype {info['dtype']} for {name}")
        start, end = info["data_offsets"]
        arr = np.frombuffer(data[base + start : base + end], dtype=np.dtype(dtype).newbyteorder("<"))
        tensors[name] = arr.reshape(info["shape"]).astype(np.float64 if dtype != np.int64 else np.int64)
    # Some checkpoints prefix every tensor with "bert.".
    if "embeddings.word_embeddings.weight" not in tensors:
        tensors = {k[len("bert.") :]: v for k, v in tensors.items() if k.startswith("bert.")}
    return tensors


def layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    # The exact (erf) GELU, as BERT's "gelu" activation.
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def dense(x, t, prefix):
    return x @ t[prefix + ".weight"].T + t[prefix + ".bias"]


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def encode(ids, t, cfg):
    eps = cfg["layer_norm_eps"]
    heads = cfg["num_attention_heads"]
    n = len(ids)
    x = (
        t["embeddings.word_embeddings.weight"][ids]
        + t["embeddings.position_embeddings.weight"][:n]
        + t["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
    hidden = x.shape[1]
    head_dim = hidden // heads
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = dense(x, t, p + "attention.self.query").reshape(n, heads, head_dim).transpose(1, 0, 2)
        k = dense(x, t, p + "attention.self.key").reshape(n, heads, head_dim).transpose(1, 0, 2)
        v = dense(x, t, p + "attention.self.value").reshape(n, heads, head_dim).transpose(1, 0, 2)
        scores = softmax(q @ k.transpose(0, 2, 1) / math.sqrt(head_dim))
        ctx = (scores @ v).transpose(1, 0, 2).reshape(n, hidden)
        attn = dense(ctx, t, p + "attention.output.dense")
        x = layer_norm(
            attn + x, t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"], eps
        )
        inter = gelu(dense(x, t, p + "intermediate.dense"))
        out = dense(inter, t, p + "output.dense")
        x = layer_norm(out + x, t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"], eps)
    pooled = x.mean(axis=0)
    return pooled / max(np.linalg.norm(pooled), 1e-12)


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    model_dir, ids_json = sys.argv[1], sys.argv[2]
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    tensors = load_safetensors(os.path.join(model_dir, "model.safetensors"))
    token_ids = json.loads(ids_json)
    out = [encode(np.array(ids, dtype=np.int64), tensors, cfg).tolist() for ids in token_ids]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
