"""A minimal GGUF reader for Llama checkpoints quantised with Q4_1 / Q8_0 / F32 / F16 (SmolLM2's file).

transformers reads GGUF files through the ``gguf`` package; machines that have only PyTorch,
transformers, peft and accelerate (the GPU machines this toolkit's GPU recipe runs on) do not have
it. This reader turns the offline SmolLM2 GGUF file into a Hugging Face state dict with numpy alone:
the header, the metadata (skipped), the tensor table, then each tensor de-quantised and renamed, with
the rotary permutation of ``attn_q``/``attn_k`` undone as transformers does. A test checks the result
against transformers' own GGUF loading, tensor for tensor.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

GGML_F32, GGML_F16, GGML_Q4_1, GGML_Q8_0 = 0, 1, 3, 8
_BLOCK = {GGML_Q4_1: (32, 20), GGML_Q8_0: (32, 34)}  # (values per block, bytes per block)
# GGUF metadata value types -> struct format (scalars); 8 = string, 9 = array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
          "output.weight": "lm_head.weight"}
_LAYER = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


class _Cursor:
    def __init__(self, data: memoryview):
        self.data, self.at = data, 0

    def take(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        values = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += size
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        length = self.take("Q")
        text = bytes(self.data[self.at:self.at + length]).decode("utf-8", errors="replace")
        self.at += length
        return text

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == 8:
            return self.string()
        if kind == 9:
            inner, count = self.take("I"), self.take("Q")
            if inner in _SCALARS:  # skip numeric arrays in one step
                self.at += struct.calcsize("<" + _SCALARS[inner]) * count
                return None
            return [self.value(inner) for _ in range(count)]
        raise ValueError(f"unknown GGUF value type {kind}")


def _dequantize(raw: np.ndarray, kind: int, count: int) -> np.ndarray:
    if kind == GGML_F32:
        return raw.view(np.float32)[:count].copy()
    if kind == GGML_F16:
        return raw.view(np.float16)[:count].astype(np.float32)
    values, size = _BLOCK[kind]
    blocks = raw[: count // values * size].reshape(-1, size)
    if kind == GGML_Q4_1:  # d, m (fp16), 16 bytes: low nibbles = values 0-15, high nibbles = 16-31
        d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
        m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
        q = blocks[:, 4:]
        quants = np.concatenate([q & 0x0F, q >> 4], axis=1).astype(np.float32)
        return (quants * d + m).reshape(-1)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # Q8_0: d (fp16), 32 int8
    return (blocks[:, 2:].copy().view(np.int8).astype(np.float32) * d).reshape(-1)


def _unpermute(weights: np.ndarray, heads: int) -> np.ndarray:
    dim = weights.shape[0] // heads // 2
    return weights.reshape(heads, dim, 2, *weights.shape[1:]).swapaxes(2, 1).reshape(weights.shape)


def hf_name(name: str) -> str:
    if name in _NAMES:
        return _NAMES[name]
    _, layer, part, kind = name.split(".")
    return f"model.layers.{layer}.{_LAYER[part]}.{kind}"


def read_gguf_state_dict(path: str | Path, num_heads: int, num_kv_heads: int) -> dict[str, np.ndarray]:
    """The float32 state dict (Hugging Face names) of a Llama GGUF file."""
    data = np.memmap(str(path), dtype=np.uint8, mode="r")
    cursor = _Cursor(memoryview(data))
    if bytes(data[:4]) != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    cursor.at = 4
    version, n_tensors, n_kv = cursor.take("I"), cursor.take("Q"), cursor.take("Q")
    if version < 2:
        raise ValueError(f"GGUF version {version} is not supported")
    alignment = 32
    for _ in range(n_kv):
        key = cursor.string()
        value = cursor.value(cursor.take("I"))
        if key == "general.alignment":
            alignment = int(value)
    infos = []
    for _ in range(n_tensors):
        name = cursor.string()
        dims = [cursor.take("Q") for _ in range(cursor.take("I"))]
        kind, offset = cursor.take("I"), cursor.take("Q")
        infos.append((name, dims, kind, offset))
    start = -(-cursor.at // alignment) * alignment
    state = {}
    for name, dims, kind, offset in infos:
        if kind not in (GGML_F32, GGML_F16, GGML_Q4_1, GGML_Q8_0):
            raise ValueError(f"tensor {name}: GGML type {kind} is not supported by this reader")
        count = int(np.prod(dims))
        if kind in _BLOCK:
            values, size = _BLOCK[kind]
            nbytes = count // values * size
        else:
            nbytes = count * (4 if kind == GGML_F32 else 2)
        raw = np.asarray(data[start + offset:start + offset + nbytes])
        weights = _dequantize(raw, kind, count).reshape(list(reversed(dims)))
        if ".attn_q." in name:
            weights = _unpermute(weights, num_heads)
        elif ".attn_k." in name:
            weights = _unpermute(weights, num_kv_heads)
        state[hf_name(name)] = weights
    return state
