#!/usr/bin/env python3
"""Writes a random-weight, Llama-shaped Q4_0 GGUF for GPU benchmarks.

No numpy, no gguf package: plain Python, so it runs on a bare GPU machine.
Speed does not depend on the weights' values, so the blocks repeat one
random 1 MiB pattern (each Q4_0 block: a small fp16 scale, 16 random
bytes of 4-bit values). The vocabulary is synthetic: <unk>, <s>, </s>, the
256 byte-fallback tokens, then filler tokens, with llama.cpp's SPM
("llama") tokenizer, so any text tokenizes.

    python3 make_gguf.py OUT.gguf [--shape 8b|1b|tiny]

8b: Llama-3-8B's shape (4096 wide, 32 layers, GQA 32/8, FFN 14336,
128256 tokens), about 4.3 GB. 1b: Llama-3.2-1B's shape. tiny: a few MB,
for checking the script.
"""

import os
import struct
import sys

SHAPES = {
    "8b": dict(n_embd=4096, n_layer=32, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=128256),
    "1b": dict(n_embd=2048, n_layer=16, n_head=32, n_head_kv=8, n_ff=8192, n_vocab=128256),
    "tiny": dict(n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=512, n_vocab=512),
}

GGML_F32, GGML_Q4_0 = 0, 2
T_U32, T_I32, T_F32, T_STR, T_ARR = 4, 5, 6, 8, 9
ALIGN = 32
Q4_0_BLOCK_BYTES, Q4_0_BLOCK_ELEMS = 18, 32
FP16_SCALE = struct.pack("<e", 0.01)


def s(text):
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def kv(key, kind, value):
    out = s(key) + struct.pack("<I", kind)
    if kind == T_U32:
        return out + struct.pack("<I", value)
    if kind == T_I32:
        return out + struct.pack("<i", value)
    if kind == T_F32:
        return out + struct.pack("<f", value)
    if kind == T_STR:
        return out + s(value)
    raise ValueError(kind)


def kv_array(key, kind, values):
    out = s(key) + struct.pack("<IIQ", T_ARR, kind, len(values))
    if kind == T_STR:
        return out + b"".join(s(v) for v in values)
    if kind == T_F32:
        return out + struct.pack(f"<{len(values)}f", *values)
    if kind == T_I32:
        return out + struct.pack(f"<{len(values)}i", *values)
    raise ValueError(kind)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out_path = sys.argv[1]
    shape = "8b"
    if "--shape" in sys.argv:
        shape = sys.argv[sys.argv.index("--shape") + 1]
    p = SHAPES[shape]
    e, ff, vocab = p["n_embd"], p["n_ff"], p["n_vocab"]
    head_dim = e // p["n_head"]
    kv_dim = head_dim * p["n_head_kv"]

    tensors = [("token_embd.weight", [e, vocab], GGML_Q4_0)]
    for i in range(p["n_layer"]):
        b = f"blk.{i}."
        tensors += [
            (b + "attn_norm.weight", [e], GGML_F32),
            (b + "attn_q.weight", [e, e], GGML_Q4_0),
            (b + "attn_k.weight", [e, kv_dim], GGML_Q4_0),
            (b + "attn_v.weight", [e, kv_dim], GGML_Q4_0),
            (b + "attn_output.weight", [e, e], GGML_Q4_0),
            (b + "ffn_norm.weight", [e], GGML_F32),
            (b + "ffn_gate.weight", [e, ff], GGML_Q4_0),
            (b + "ffn_up.weight", [e, ff], GGML_Q4_0),
            (b + "ffn_down.weight", [ff, e], GGML_Q4_0),
        ]
    tensors += [("output_norm.weight", [e], GGML_F32), ("output.weight", [e, vocab], GGML_Q4_0)]

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581t{i}" for i in range(vocab - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (vocab - 259)
    scores = [0.0] * 259 + [-float(i) for i in range(vocab - 259)]

    meta = [
        kv("general.architecture", T_STR, "llama"),
        kv("general.name", T_STR, f"random-llama-{shape}-q4_0"),
        kv("general.file_type", T_U32, 2),
        kv("llama.context_length", T_U32, 8192),
        kv("llama.embedding_length", T_U32, e),
        kv("llama.block_count", T_U32, p["n_layer"]),
        kv("llama.feed_forward_length", T_U32, ff),
        kv("llama.attention.head_count", T_U32, p["n_head"]),
        kv("llama.attention.head_count_kv", T_U32, p["n_head_kv"]),
        kv("llama.rope.dimension_count", T_U32, head_dim),
        kv("llama.rope.freq_base", T_F32, 500000.0),
        kv("llama.attention.layer_norm_rms_epsilon", T_F32, 1e-5),
        kv("llama.vocab_size", T_U32, vocab),
        kv("tokenizer.ggml.model", T_STR, "llama"),
        kv_array("tokenizer.ggml.tokens", T_STR, tokens),
        kv_array("tokenizer.ggml.scores", T_F32, scores),
        kv_array("tokenizer.ggml.token_type", T_I32, types),
        kv("tokenizer.ggml.unknown_token_id", T_U32, 0),
        kv("tokenizer.ggml.bos_token_id", T_U32, 1),
        kv("tokenizer.ggml.eos_token_id", T_U32, 2),
    ]

    def nbytes(dims, kind):
        n = 1
        for d in dims:
            n *= d
        if kind == GGML_F32:
            return 4 * n
        return n // Q4_0_BLOCK_ELEMS * Q4_0_BLOCK_BYTES

    infos, offset = [], 0
    for name, dims, kind in tensors:
        infos.append(
            s(name)
            + struct.pack("<I", len(dims))
            + b"".join(struct.pack("<Q", d) for d in dims)
            + struct.pack("<IQ", kind, offset)
        )
        offset += (nbytes(dims, kind) + ALIGN - 1) // ALIGN * ALIGN

    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    header += b"".join(meta) + b"".join(infos)
    header += b"\0" * ((ALIGN - len(header) % ALIGN) % ALIGN)

    # One random pattern of whole Q4_0 blocks, about 1 MiB, repeated.
    blocks = 58254
    pattern = bytearray()
    rnd = os.urandom(blocks * 16)
    for i in range(blocks):
        pattern += FP16_SCALE + rnd[i * 16:(i + 1) * 16]
    pattern = bytes(pattern)
    norm = struct.pack("<f", 1.0)

    with open(out_path, "wb") as f:
        f.write(header)
        for name, dims, kind in tensors:
            size = nbytes(dims, kind)
            if kind == GGML_F32:
                f.write(norm * (size // 4))
            else:
                left = size
                while left > 0:
                    chunk = pattern[: min(left, len(pattern))]
                    f.write(chunk)
                    left -= len(chunk)
            f.write(b"\0" * ((ALIGN - size % ALIGN) % ALIGN))
    print(f"{out_path}: {shape}, {len(tensors)} tensors, {os.path.getsize(out_path) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
