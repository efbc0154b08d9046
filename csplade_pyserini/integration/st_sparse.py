"""A CSPLADE checkpoint as a Sentence Transformers ``SparseEncoder`` (sentence-transformers 5 and later).

    python -m csplade_pyserini.train export --checkpoint runs/train/cpu-recipe/model/best \
        --output-dir models/csplade-st --sentence-transformers

    from sentence_transformers import SparseEncoder
    model = SparseEncoder("models/csplade-st", trust_remote_code=True)   # our module class is imported
    model.encode_query(["what causes cancer"]); model.encode_document(["Cells divide ..."])

The exported folder is the merged standalone checkpoint (``train export``) plus ``modules.json`` and
``config_sentence_transformers.json`` naming one module, :class:`CspladeSparseModule`, which runs the
toolkit's own encoder: the card's prefixes, variant, logit scale and bias, lexical head and top-k apply
exactly as in ``pyserini.encode``, so ``encode_query`` / ``encode_document`` return the same float weights
as :meth:`CspladeModel.encode_weights` (impacts are those weights x ``quant_scale``, rounded). Sentence
Transformers' own modules (``MLMTransformer`` + ``SpladePooling``) cannot express a causal LM with these
choices, hence the custom module; it needs this package installed where the model is loaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from sentence_transformers.base.modules.input_module import InputModule

from csplade_pyserini.model.pooling import SHAPE_MULTIPLE, keep_top_k

logger = logging.getLogger(__name__)

MODULE_TYPE = f"{__name__}.CspladeSparseModule"


def _kind(task: str | None) -> str:
    """Sentence Transformers' task (``query`` / ``document``) as our kind (``query`` / ``doc``)."""
    return "query" if task == "query" else "doc"


class CspladeSparseModule(InputModule):
    """Tokenises and encodes with a loaded :class:`CspladeModel`; ``task`` picks the query or document side."""

    forward_kwargs = {"task"}
    save_in_root = True

    def __init__(self, model, folder: str | Path | None = None):
        super().__init__()
        self.csplade = model
        self.encoder = model.encoder  # registered, so .to(device) and .eval() reach the LM
        self.tokenizer = model.encoder.tokenizer
        self.folder = Path(folder) if folder is not None else None

    @property
    def max_seq_length(self) -> int:
        return self.csplade.card.max_doc_length

    def preprocess(self, inputs: Sequence[str], prompt: str | None = None, task: str | None = None,
                   **_ignored) -> dict[str, Any]:
        texts = [prompt + text if prompt else text for text in inputs]
        kind = _kind(task)
        # padded to the same multiple as our own batches: in bf16 the padded width changes the rounding
        batch = self.encoder.collate(self.encoder.tokenize(texts, kind), kind=kind, pad_multiple=SHAPE_MULTIPLE)
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "pool_mask": batch.pool_mask}

    def forward(self, features: dict[str, torch.Tensor], task: str | None = None, **_ignored) -> dict[str, Any]:
        weights = self.encoder(features["input_ids"], features["attention_mask"], features["pool_mask"])
        features["sentence_embedding"] = keep_top_k(weights, self.csplade.card.top_k(_kind(task)))
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.encoder.vocab

    get_embedding_dimension = get_sentence_embedding_dimension

    def save(self, output_path: str, *args, **kwargs) -> None:
        """Copy the checkpoint files this module was loaded from (the export wrote them; ST re-saves here)."""
        import shutil

        if self.folder is None:
            raise ValueError("this module was not loaded from a folder; use `train export --sentence-transformers`")
        out = Path(output_path)
        if out.resolve() == self.folder.resolve():
            return
        for path in self.folder.iterdir():
            if path.name not in ("modules.json", "config_sentence_transformers.json"):
                (shutil.copytree if path.is_dir() else shutil.copy2)(path, out / path.name)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None, revision=None,
             local_files_only: bool = False, **_ignored) -> "CspladeSparseModule":
        from csplade_pyserini.model.encoder import CspladeModel

        folder = cls.load_dir_path(model_name_or_path, subfolder=subfolder, token=token, cache_folder=cache_folder,
                                   revision=revision, local_files_only=local_files_only)
        return cls(CspladeModel.from_spec(f"csplade:{folder}", cache=False), folder)


def write_sentence_transformers_files(folder: str | Path) -> None:
    """Make an exported checkpoint folder loadable by ``SparseEncoder(folder, trust_remote_code=True)``."""
    from csplade_pyserini import __version__

    folder = Path(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE}]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    config = {"model_type": "SparseEncoder", "similarity_fn_name": "dot", "prompts": {"query": "", "document": ""},
              "default_prompt_name": None,
              "__version__": {"csplade_pyserini": __version__, "note": "needs pip install csplade-pyserini"}}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
