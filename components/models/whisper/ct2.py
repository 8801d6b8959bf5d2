"""Read and write a CTranslate2 Whisper ``model.bin``, mapped onto transformers' Whisper names.

The file (binary version 6, little-endian):

    u32 version | string spec name ("WhisperSpec") | u32 revision | u32 n_variables
    n_variables x (string name | u8 rank | u32 dims[rank] | u8 dtype | u32 n_bytes | bytes)
    u32 n_aliases x (string alias | string target)

A string is a u16 length (counting its trailing NUL), the bytes, the NUL. dtype codes:
0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16. Only float weights are mapped; int8-quantised
files (a ``weight_scale`` beside each weight) are refused with a clear error. Writing takes a template
file (the one the weights came from) and replaces its float weights: every other variable (head counts,
flags), the spec and the aliases stay as CTranslate2 wrote them.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}  # bf16 read as raw u16
_CODES = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3, np.dtype(np.float16): 4}
SUPPORTED_VERSION = 6


@dataclass
class CT2File:
    """A model.bin as written: its variables in file order (bf16 ones as float32) and its aliases."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


class CT2FormatError(ValueError):
    """A model.bin that is not a readable CTranslate2 Whisper file; the message names the file and place."""


class _Reader:
    def __init__(self, parts: list[Path]) -> None:
        self.path = parts[0] if len(parts) == 1 else f"{parts[0]} (+{len(parts) - 1} parts)"
        # a memoryview: every variable's array is a view of the file's bytes, not a copy of them
        self.data = memoryview(parts[0].read_bytes() if len(parts) == 1 else b"".join(p.read_bytes() for p in parts))
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise CT2FormatError(f"{self.path}: truncated at byte {self.pos} (wanted {n} more, file has {len(self.data)})")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (n,) = self.unpack("H")
        raw = bytes(self.take(n))
        try:
            if not raw.endswith(b"\0"):
                raise ValueError("no trailing NUL")
            return raw[:-1].decode("utf-8")
        except ValueError as err:
            raise CT2FormatError(f"{self.path}: the string at byte {self.pos - n} is not a CTranslate2 string ({err})") from err


def read_ct2(path: str | Path | list[Path]) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, {variable name: array}) of a model.bin (or its parts, in order); aliases share their target's array."""
    file = read_ct2_file(path)
    return file.spec, file.variables | {alias: file.variables[target] for alias, target in file.aliases.items()}


def read_ct2_file(path: str | Path | list[Path]) -> CT2File:
    reader = _Reader([Path(p) for p in path] if isinstance(path, list) else [Path(path)])
    path = reader.path
    (version,) = reader.unpack("I")
    if version != SUPPORTED_VERSION:
        raise CT2FormatError(f"{path}: CTranslate2 binary version {version}, this reader knows version {SUPPORTED_VERSION}")
    spec = reader.string()
    (revision,) = reader.unpack("I")
    (count,) = reader.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = reader.string()
        (rank,) = reader.unpack("B")
        dims = reader.unpack("I" * rank)
        (code,) = reader.unpack("B")
        (nbytes,) = reader.unpack("I")
        if code not in _DTYPES:
            raise CT2FormatError(f"{path}: variable {name!r} has unknown dtype code {code}")
        dtype = np.dtype(_DTYPES[code])
        if nbytes != dtype.itemsize * int(np.prod(dims, dtype=np.int64)):
            raise CT2FormatError(f"{path}: variable {name!r} has {nbytes} bytes, its shape {dims} needs {dtype.itemsize * int(np.prod(dims))}")
        array = np.frombuffer(reader.take(nbytes), dtype=dtype).reshape(dims)
        variables[name] = _bf16_to_f32(array) if code == 5 else array
    (count,) = reader.unpack("I")
    aliases = {}
    for _ in range(count):
        alias, target = reader.string(), reader.string()
        if target not in variables:
            raise CT2FormatError(f"{path}: alias {alias!r} points at missing variable {target!r}")
        aliases[alias] = target
    if reader.pos != len(reader.data):
        raise CT2FormatError(f"{path}: {len(reader.data) - reader.pos} unexpected bytes after the aliases")
    return CT2File(spec, revision, variables, aliases)


def write_ct2_file(file: CT2File, path: str | Path) -> None:
    """The inverse of read_ct2_file (bf16 variables come back as float32)."""

    def string(s: str) -> bytes:
        raw = s.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", SUPPORTED_VERSION), string(file.spec), struct.pack("<II", file.revision, len(file.variables))]
    for name, array in file.variables.items():
        array = np.require(array, requirements="C")  # (ascontiguousarray would make a scalar 1-D)
        out += [string(name), struct.pack("<B", array.ndim), struct.pack(f"<{array.ndim}I", *array.shape), struct.pack("<BI", _CODES[array.dtype], array.nbytes), array.tobytes()]
    out.append(struct.pack("<I", len(file.aliases)))
    out += [string(alias) + string(target) for alias, target in file.aliases.items()]
    Path(path).write_bytes(b"".join(out))


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)  # bf16 is the top half of an f32


def whisper_dimensions(variables: dict[str, np.ndarray]) -> dict:
    """The transformers WhisperConfig sizes implied by a CT2 Whisper's variables."""

    def layers(prefix: str) -> int:
        found = {int(m.group(1)) for name in variables if (m := re.match(rf"{prefix}/layer_(\d+)/", name))}
        return max(found) + 1 if found else 0

    vocab, d_model = variables["decoder/embeddings/weight"].shape
    return {
        "vocab_size": int(vocab),
        "d_model": int(d_model),
        "num_mel_bins": int(variables["encoder/conv1/weight"].shape[1]),
        "encoder_layers": layers("encoder"),
        "decoder_layers": layers("decoder"),
        "encoder_attention_heads": int(variables["encoder/num_heads"]),
        "decoder_attention_heads": int(variables["decoder/num_heads"]),
        "encoder_ffn_dim": int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(variables["decoder/position_encodings/encodings"].shape[0]),
    }


def _linear(out: dict, hf: str, variables: dict, ct2: str) -> None:
    out[f"{hf}.weight"] = variables[f"{ct2}/weight"]
    if f"{ct2}/bias" in variables:
        out[f"{hf}.bias"] = variables[f"{ct2}/bias"]


def _norm(out: dict, hf: str, variables: dict, ct2: str) -> None:
    out[f"{hf}.weight"] = variables[f"{ct2}/gamma"]
    out[f"{hf}.bias"] = variables[f"{ct2}/beta"]


def _split_rows(out: dict, hf_names: list[str], variables: dict, ct2: str, bias_of: set[str]) -> None:
    """A fused projection (q, k, v stacked on rows) -> one transformers Linear each; k has no bias."""
    weights = np.split(variables[f"{ct2}/weight"], len(hf_names), axis=0)
    biases = np.split(variables[f"{ct2}/bias"], len(hf_names), axis=0)
    for name, w, b in zip(hf_names, weights, biases):
        out[f"{name}.weight"] = w
        if name.rsplit(".", 1)[-1] in bias_of:
            out[f"{name}.bias"] = b


def _self_attention_and_ffn(out: dict, hf: str, variables: dict, ct: str) -> None:
    """What encoder and decoder layers share: self-attention (fused q, k, v), the FFN, their norms."""
    _split_rows(out, [f"{hf}.self_attn.{p}_proj" for p in "qkv"], variables, f"{ct}/self_attention/linear_0", {"q_proj", "v_proj"})
    _linear(out, f"{hf}.self_attn.out_proj", variables, f"{ct}/self_attention/linear_1")
    _norm(out, f"{hf}.self_attn_layer_norm", variables, f"{ct}/self_attention/layer_norm")
    _linear(out, f"{hf}.fc1", variables, f"{ct}/ffn/linear_0")
    _linear(out, f"{hf}.fc2", variables, f"{ct}/ffn/linear_1")
    _norm(out, f"{hf}.final_layer_norm", variables, f"{ct}/ffn/layer_norm")


def whisper_state_dict(variables: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """transformers ``WhisperForConditionalGeneration`` state dict (float32) from CT2 variables."""
    if any(name.endswith("weight_scale") for name in variables):
        raise CT2FormatError("this model.bin is int8-quantised; convert it with --quantization float16 or float32")
    converted: dict[int, torch.Tensor] = {}  # one float32 copy of each array, though two names share it (tied embeddings)
    out = {}
    for name, array in _hf_arrays(variables).items():
        if id(array) not in converted:
            converted[id(array)] = torch.from_numpy(np.array(array, dtype=np.float32, order="C"))  # a writable copy of the file's view
        out[name] = converted[id(array)]
    return out


def whisper_ct2_file(state: dict[str, torch.Tensor], template: CT2File) -> CT2File:
    """``template`` with every float weight taken from a transformers Whisper state dict (as float32).

    The name mapping is whisper_state_dict's, run on the template's element indices instead of its values,
    so the two are inverse by construction: fused projections, tied embeddings and aliases included."""
    floats = {name: a for name, a in template.variables.items() if a.dtype.kind == "f"}
    starts = np.cumsum([0] + [a.size for a in floats.values()])
    index = {name: np.arange(start, start + a.size, dtype=np.int64).reshape(a.shape) for (name, a), start in zip(floats.items(), starts)}
    named = template.variables | index
    flat = np.concatenate([a.astype(np.float32).ravel() for a in floats.values()])
    for hf, positions in _hf_arrays(named | {alias: named[target] for alias, target in template.aliases.items()}).items():
        if hf not in state:
            raise KeyError(f"the state dict has no {hf!r}, which the CTranslate2 file needs")
        flat[positions.ravel()] = state[hf].detach().float().cpu().numpy().ravel()
    return CT2File(template.spec, template.revision, template.variables | {name: flat[i] for name, i in index.items()}, template.aliases)


def _hf_arrays(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers' Whisper names -> views of the CT2 variables they come from."""
    dims = whisper_dimensions(variables)
    out: dict[str, np.ndarray] = {}
    enc, dec = "model.encoder", "model.decoder"
    for i in (1, 2):
        _linear(out, f"{enc}.conv{i}", variables, f"encoder/conv{i}")
    out[f"{enc}.embed_positions.weight"] = variables["encoder/position_encodings/encodings"]
    _norm(out, f"{enc}.layer_norm", variables, "encoder/layer_norm")
    for i in range(dims["encoder_layers"]):
        _self_attention_and_ffn(out, f"{enc}.layers.{i}", variables, f"encoder/layer_{i}")
    out[f"{dec}.embed_tokens.weight"] = variables["decoder/embeddings/weight"]
    out[f"{dec}.embed_positions.weight"] = variables["decoder/position_encodings/encodings"]
    _norm(out, f"{dec}.layer_norm", variables, "decoder/layer_norm")
    for i in range(dims["decoder_layers"]):
        hf, ct = f"{dec}.layers.{i}", f"decoder/layer_{i}"
        _self_attention_and_ffn(out, hf, variables, ct)
        _linear(out, f"{hf}.encoder_attn.q_proj", variables, f"{ct}/attention/linear_0")
        _split_rows(out, [f"{hf}.encoder_attn.{p}_proj" for p in "kv"], variables, f"{ct}/attention/linear_1", {"v_proj"})
        _linear(out, f"{hf}.encoder_attn.out_proj", variables, f"{ct}/attention/linear_2")
        _norm(out, f"{hf}.encoder_attn_layer_norm", variables, f"{ct}/attention/layer_norm")
    out["proj_out.weight"] = variables.get("decoder/projection/weight", variables["decoder/embeddings/weight"])
    return out
