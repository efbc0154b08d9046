"""The sparse encoder's forward pass in ONNX Runtime: the export, and the encoder that runs it.

A search needs the query side only. Pyserini and Anserini ship their SPLADE query encoders as ONNX models
so that a search needs no PyTorch model; a card with ``runtime: onnx`` does the same for ours. The graph is
the whole path from token ids to the pooled vector, ``(input_ids, attention_mask, pool_mask) -> weights``
(``[batch, vocab]`` float32, before top-k and integer quantisation): backbone (the *causal*, *echo* and
*bidirectional* variants), context map, LM head, max-pool, scale, logit bias, activation, channel weight,
lexical head, special tokens zeroed. Tokenisation, prefixes, pooled positions, top-k and quantisation stay
in Python (:class:`~csplade_pyserini.model.sparse.SparseInputs`), shared with the PyTorch encoder, so both
runtimes give the same terms.

Exports are keyed by :func:`graph_fingerprint` (what changes the graph: the backbone's identity, the card
fields and weight files that enter it), never by the card as a whole: a card that differs in lengths,
prefixes or top-k reuses the same graph. ``runtime=onnx`` looks for a matching export beside the card (a
``python -m csplade_pyserini.export onnx`` folder), then in the cache, and exports into the cache on first use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from csplade_pyserini.errors import InputError
from csplade_pyserini.model.card import WEIGHT_FILES, ModelCard, card_path, located, weight_fingerprints
from csplade_pyserini.model.sparse import SparseEncoder, SparseInputs, decoder_and_head
from csplade_pyserini.paths import cache_dir

logger = logging.getLogger(__name__)

GRAPH_FILE = "sparse_encoder.onnx"
INT8_FILE = "sparse_encoder.int8.onnx"
RECORD_FILE = "onnx_export.json"
FORMAT = 3  # raised whenever the export changes, so that older exports are made again, never reused
OPSET = 18
INPUTS = ("input_ids", "attention_mask", "pool_mask")
SCREEN = 256
"""Candidates the int8 graph's LM head picks per text; the float32 head then weighs them. It serves a top-k of
at most ``SCREEN // 4`` (64): four candidates per kept term, measured to hold float32's top 64 on SciFact."""
# card fields and weight files that enter the graph (lengths, prefixes, top-k and the integer scale act
# outside it, in Python)
GRAPH_FIELDS = ("backbone", "adapter", "tokenizer", "variant", "logit_scale", "expansion", "expansion_weight",
                "lexical_layer", "context_layer", "representation")
GRAPH_WEIGHTS = ("adapter", "logit_bias", "lexical_head", "context_head")


class SparseGraph(torch.nn.Module):
    """:meth:`SparseEncoder.forward` in plain tensor operations an exporter can trace: no chunked logits
    workspace, no branch on the data. The LM head runs on every position (padding and unpooled positions
    zeroed first: their logits are then exactly 0, which never changes ``max(0, .)``).

    With ``screen``, a second output keeps the ``screen`` largest weights per text, computed again from the
    head's float32 rows of those entries alone; every other entry is 0. One export then serves both graphs
    (:func:`single_output`): the float32 graph answers the first output; the int8 graph answers the second,
    with its first product rewritten to int8 (:func:`quantize_graph`): the cheap int8 head chooses the
    candidates, the float32 head gives their weights, so the kept terms weigh what float32 gives them."""

    def __init__(self, encoder: SparseEncoder, screen: int | None = None):
        super().__init__()
        self.encoder = encoder
        self.screen = screen
        keep = torch.ones(encoder.vocab)
        keep[encoder.excluded_ids(encoder.vocab, "cpu")] = 0.0
        self.register_buffer("keep", keep)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pool_mask: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        encoder = self.encoder
        final, lexical_states = encoder.encoder_states(input_ids, attention_mask)
        weights = head = lexical = None
        if encoder.card.expansion:
            _, head = decoder_and_head(encoder.model)
            hidden = final * pool_mask.unsqueeze(-1).to(final.dtype)
            weights = encoder.activate(torch.matmul(hidden, head.t()).amax(dim=1).clamp_min(0))
        if encoder.lexical is not None:
            impacts = encoder.lexical(lexical_states).float()  # [batch, length], >= 0
            ids = torch.arange(encoder.vocab, device=input_ids.device)
            holds = (input_ids.unsqueeze(-1) == ids) & pool_mask.bool().unsqueeze(-1)
            lexical = torch.log1p(torch.where(holds, impacts.unsqueeze(-1), 0.0).amax(dim=1))
            weights = lexical if weights is None else torch.maximum(weights, lexical)
        pooled_any = pool_mask.amax(dim=1, keepdim=True).to(weights.dtype)  # a text with no pooled position
        weights = weights * self.keep * pooled_any
        if self.screen is None or head is None:
            return weights
        candidates = weights.topk(self.screen, dim=1).indices  # [batch, screen]
        rows = head[candidates]  # [batch, screen, hidden]: the head's float32 rows of the candidates
        exact = encoder.activate(torch.matmul(hidden, rows.transpose(1, 2)).amax(dim=1).clamp_min(0), candidates)
        if lexical is not None:
            exact = torch.maximum(exact, lexical.gather(1, candidates))
        return weights, torch.zeros_like(weights).scatter(1, candidates, exact * self.keep[candidates] * pooled_any)


def graph_fingerprint(card: ModelCard, base_dir: Path | None) -> str:
    """What identifies an exported graph: the backbone (:func:`backbone_identity`), the card fields that enter
    the graph and the content of its weight files, and this module's export format."""
    from csplade_pyserini.model.backbone import backbone_identity

    files = weight_fingerprints(card, base_dir)
    # a file the card names but nobody has (a hub adapter, a missing file) enters by its name: never as "none"
    weights = {name: files[name] if files[name] is not None else getattr(card, name) for name in GRAPH_WEIGHTS}
    data = {"format": FORMAT, "fields": {name: getattr(card, name) for name in GRAPH_FIELDS}, "weights": weights,
            "backbone": backbone_identity(card, base_dir)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def export_graph(encoder: SparseEncoder, path: Path, screen: int | None = None) -> None:
    """``encoder``'s forward pass as an ONNX graph at ``path`` (``torch.onnx``'s exporter, dynamic batch and
    length), screened (:class:`SparseGraph`) where ``screen`` is given. ``encoder`` should hold float32
    weights: that is the precision the graph keeps. Over protobuf's 2 GB limit (:func:`over_protobuf_limit`)
    the weights go to an external data file beside it."""
    graph = SparseGraph(encoder, screen).eval()
    sample = encoder.collate(encoder.tokenize(["a first sample text", "and a second, longer sample text"], "doc"))
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    shapes = {name: {0: batch, 1: length} for name in INPUTS}
    outputs = ["weights", "screened"] if screen is not None and encoder.card.expansion else ["weights"]
    with torch.no_grad():
        torch.onnx.export(graph, (sample.input_ids, sample.attention_mask, sample.pool_mask), str(path),
                          input_names=list(INPUTS), output_names=outputs, dynamic_shapes=shapes, dynamo=True,
                          external_data=over_protobuf_limit(encoder), opset_version=OPSET, verbose=False)


def over_protobuf_limit(encoder: SparseEncoder) -> bool:
    """Whether ``encoder``'s weights need an external data file in ONNX (protobuf's 2 GB limit, with margin)."""
    return sum(p.numel() * p.element_size() for p in encoder.parameters()) > 1.8 * 2**30


def single_output(model, name: str):
    """A copy of the ONNX ``model`` answering its output ``name`` alone: the other outputs, and the nodes and
    weights only they need, dropped (ONNX Runtime runs every node of a graph)."""
    import onnx

    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    graph = pruned.graph
    needed, kept = {name}, []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(node.input)
    for field, keep in ((graph.node, kept[::-1]), (graph.output, [o for o in graph.output if o.name == name]),
                        (graph.initializer, [i for i in graph.initializer if i.name in needed]),
                        (graph.value_info, [v for v in graph.value_info if v.name in needed])):
        del field[:]
        field.extend(keep)
    return pruned


def quantize_graph(source: Path, target: Path, vocab: int) -> None:
    """ONNX Runtime's dynamic int8 quantisation (weights per output channel, activations per batch) of the LM
    head's matrix product, written to ``target``; the decoder stays float32 (without an LM-head channel, the
    decoder's products are quantised). The head is most of a query's time (a ``vocab x hidden`` matrix read
    from memory per text); in a screened graph (:class:`SparseGraph`) only its first product is int8, and the
    float32 head weighs the candidates. Quantising the decoder's products too moves the states every weight
    is computed from (``docs/benchmarks.md``)."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source))
    weights = {init.name: init for init in graph.graph.initializer}
    node = head_product(graph, weights, vocab)
    if node is None:  # no LM-head channel (a lexical head alone): the decoder's products, then
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
        return
    weight = node.input[1]
    if weight not in weights:  # a tied head: MatMul(states, Transpose(embedding)); give it its own matrix
        transpose = next(n for n in graph.graph.node if n.output[0] == weight)
        matrix = numpy_helper.to_array(weights[transpose.input[0]]).T.copy()
        graph.graph.initializer.append(numpy_helper.from_array(matrix, "lm_head_t"))
        node.input[1] = "lm_head_t"
        if not any(weight in n.input for n in graph.graph.node):
            graph.graph.node.remove(transpose)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "head.onnx"
        onnx.save(graph, str(staged))
        quantize_dynamic(str(staged), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_quantize=[node.name])


def head_product(graph, weights: dict, vocab: int):
    """The graph's LM-head ``MatMul``: its second input a ``[hidden, vocab]`` matrix, or the transpose of a
    ``[vocab, hidden]`` one (a head tied to the embeddings)."""
    producers = {n.output[0]: n for n in graph.graph.node}
    for node in graph.graph.node:
        if node.op_type != "MatMul":
            continue
        second = node.input[1]
        if second in weights and list(weights[second].dims)[-1] == vocab:
            return node
        producer = producers.get(second)
        if (producer is not None and producer.op_type == "Transpose" and producer.input[0] in weights
                and list(weights[producer.input[0]].dims)[0] == vocab):
            return node
    return None


def write_export(folder: Path, card: ModelCard, base_dir: Path | None) -> dict:
    """Export ``card``'s sparse encoder into ``folder``: the float32 graph, its int8 twin and the record
    (:data:`RECORD_FILE`) that names the fingerprint. Loads the PyTorch model once, in float32."""
    try:
        import onnx  # the exporter needs it; ONNX Runtime alone only runs graphs
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise InputError(f"exporting to ONNX needs the packages onnx and onnxscript ({exc}): "
                         "pip install onnx onnxscript", field="runtime") from None
    import onnxruntime

    from csplade_pyserini.model.encoder import CspladeModel

    model = CspladeModel.from_card(card.replace(runtime="torch", dtype="float32", quantization=None), base_dir)
    encoder = model.encoder
    logger.info("exporting %s to ONNX in %s (once per graph)", card.name or card.backbone, folder)
    int8 = INT8_FILE
    screen = min(SCREEN, encoder.vocab) if encoder.card.expansion else None
    if over_protobuf_limit(encoder):  # the staged int8 rewrite is made for graphs that fit in one protobuf
        export_graph(encoder, folder / GRAPH_FILE)
        int8 = screen = None
        logger.warning("the graph is over 2 GB (weights in an external data file): no int8 graph")
    elif screen is None:  # a lexical head alone: nothing to screen, its decoder's products are quantised
        export_graph(encoder, folder / GRAPH_FILE)
        quantize_graph(folder / GRAPH_FILE, folder / INT8_FILE, encoder.vocab)
    else:  # one export, two graphs
        with tempfile.TemporaryDirectory() as tmp:
            export_graph(encoder, Path(tmp) / "both.onnx", screen)
            both = onnx.load(str(Path(tmp) / "both.onnx"))
            onnx.save(single_output(both, "weights"), str(folder / GRAPH_FILE))
            onnx.save(single_output(both, "screened"), str(Path(tmp) / "screened.onnx"))
            del both
            quantize_graph(Path(tmp) / "screened.onnx", folder / INT8_FILE, encoder.vocab)
    record = {"format": FORMAT, "fingerprint": graph_fingerprint(card, base_dir),
              "fields": {name: getattr(card, name) for name in GRAPH_FIELDS}, "vocab": encoder.vocab,
              "max_position_embeddings": model.max_positions(),
              "inputs": list(INPUTS), "output": "weights: [batch, vocab] float32, before top-k and quantisation",
              "files": {"float32": GRAPH_FILE, "int8": int8}, "screen": screen, "opset": OPSET,
              "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    (folder / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return record


def read_record(folder: Path) -> dict | None:
    """The export record in ``folder``, or None where there is none (or it is unreadable)."""
    try:
        return json.loads((Path(folder) / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def export_folder(card: ModelCard, base_dir: Path | None) -> tuple[Path, dict]:
    """The folder holding ``card``'s graph and its record: an export beside the card whose fingerprint matches,
    else the cache's (``cache_dir()/onnx/FINGERPRINT``), exported there on first use."""
    from csplade_pyserini.atomic import atomic_dir

    fingerprint = graph_fingerprint(card, base_dir)
    cached = cache_dir() / "onnx" / fingerprint
    for folder in ([Path(base_dir)] if base_dir is not None else []) + [cached]:
        record = read_record(folder)
        if record is not None and record.get("fingerprint") == fingerprint:
            return folder, record
    with atomic_dir(cached) as tmp:
        record = write_export(tmp, card, base_dir)
    return cached, record


def graph_file(folder: Path, record: dict, kind: str) -> Path:
    """The ``float32`` or ``int8`` graph of an export; a graph over 2 GB has no int8 twin."""
    name = record["files"].get(kind)
    if name is None:
        raise InputError(f"the ONNX export in {folder} has no {kind} graph (a graph over 2 GB): use runtime=onnx",
                         field="runtime")
    return Path(folder) / name


def numpy_rows(weights, top_k: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`~csplade_pyserini.model.sparse.sparse_rows` in NumPy, single-threaded: a torch operation on the
    ``[batch, vocab]`` output would wake torch's OpenMP threads while ONNX Runtime's own still hold the cores
    (measured: ~8 ms per query in two small operations)."""
    import numpy

    rows = []
    for row in weights:
        ids = numpy.flatnonzero(row > 0)
        if top_k is not None and ids.size > top_k:
            ids = numpy.sort(ids[numpy.argpartition(row[ids], -top_k)[-top_k:]])
        rows.append((torch.from_numpy(ids), torch.from_numpy(row[ids])))
    return rows


class OnnxSparseEncoder(SparseInputs):
    """A sparse encoder whose forward pass runs in ONNX Runtime; the same tokenisation, batching and sparse rows
    as :class:`SparseEncoder`, which is what :class:`~csplade_pyserini.model.encoder.CspladeModel` calls.

    The int8 graph is screened (:class:`SparseGraph`): it answers a top-k of at most ``screen // 4``. A side
    without a top-k, or a larger one (a card's documents), runs the float32 graph instead, loaded when first
    asked for."""

    model = None  # no PyTorch model behind it

    def __init__(self, folder: Path, record: dict, kind: str, tokenizer, card: ModelCard, device: str = "cpu"):
        self.folder, self.record, self.device = Path(folder), record, device
        self.graph = graph_file(self.folder, record, kind)
        self.session = self.open(self.graph)
        self.screen = record.get("screen") if kind == "int8" else None
        self._float32 = None
        self.vocab = int(record["vocab"])
        self.positions = record.get("max_position_embeddings")
        self.init_inputs(tokenizer, card)

    def open(self, graph: Path):
        """An ONNX Runtime session on ``graph`` with the process's thread count."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # what --threads / OMP_NUM_THREADS chose
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if str(self.device).startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        return onnxruntime.InferenceSession(str(graph), options, providers=providers)

    def session_for(self, top_k: int | None):
        """The session that gives ``top_k`` terms per text as float32 weighs them: the screened int8 graph
        where ``top_k`` fits its screen, the float32 graph otherwise."""
        served = None if self.screen is None else self.screen // 4  # four candidates per kept term
        if served is None or (top_k is not None and top_k <= served):
            return self.session
        if self._float32 is None:
            logger.info("%s: running the float32 graph (the int8 graph serves a top-k of at most %d)",
                        "no top-k" if top_k is None else f"a top-k of {top_k}", served)
            self._float32 = self.open(graph_file(self.folder, self.record, "float32"))
        return self._float32

    @classmethod
    def for_card(cls, card: ModelCard, base_dir: Path | None, tokenizer, device: str = "cpu") -> "OnnxSparseEncoder":
        import errno

        kind = "int8" if card.runtime == "onnx-int8" else "float32"
        try:
            folder, record = export_folder(card, base_dir)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            # an unwritable cache: export into a temporary folder, load the graphs from it, remove it
            logger.warning("cannot write the ONNX cache (%s); exporting for this process only", exc)
            with tempfile.TemporaryDirectory() as tmp:
                encoder = cls(Path(tmp), write_export(Path(tmp), card, base_dir), kind, tokenizer, card, device)
                if encoder.screen is not None:
                    encoder.session_for(None)  # its float32 fallback, while the file exists
                return encoder
        return cls(folder, record, kind, tokenizer, card, device)

    def encode_sequences(self, sequences: Sequence[Sequence[int]], top_k: int | None = None,
                         max_tokens: int | None = None, max_batch: int = 256, device: str = "cpu", progress=None,
                         pad_multiple: int = 1, kind: str = "doc") -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Sparse (token ids, float weights) per sequence, in input order (:meth:`SparseEncoder.encode_sequences`)."""
        session = self.session_for(top_k)
        results: list = [None] * len(sequences)
        for batch in self.batches(sequences, max_tokens or 1024, max_batch, pad_multiple, kind):
            feeds = {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy(),
                     "pool_mask": batch.pool_mask.numpy()}
            weights = session.run(None, feeds)[0]
            for position, row in zip(batch.order, numpy_rows(weights, top_k)):
                results[position] = row
            if progress is not None:
                progress.update(len(batch.order))
        return results


def export_model(card: ModelCard, base_dir: Path | None, folder: Path) -> tuple[ModelCard, dict]:
    """A self-contained ONNX export of ``card`` written into ``folder`` (empty): the graph and its record, the
    card with ``runtime: onnx``, and the card's weight files copied beside it (the index check fingerprints
    them, and a ``runtime=torch`` override of the exported card still finds them). A word-channel card exports
    its LM-head channel (its words need no model on the query side)."""
    import shutil

    if card.is_dense:
        raise InputError("a dense model runs on torch; ONNX export serves sparse models", field="representation")
    if card.is_words and not card.expansion:
        raise InputError("this word channel has no model on its query side (queries are weighted by idf): there "
                         "is nothing to export", field="expansion")
    if base_dir is not None:
        card = located(card, base_dir)
    changes: dict = {"runtime": "onnx"}
    for name in WEIGHT_FILES:
        reference = getattr(card, name)
        if not reference:
            continue
        source = card_path(reference, base_dir)
        if not source.exists():
            if name == "adapter":  # a hub id: stays a reference
                continue
            raise InputError(f"the model card's {name} file does not exist", path=source, field=name)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, folder / source.name)
        changes[name] = source.name
    exported = card.replace(**changes)
    exported.save(folder)
    record = write_export(folder, exported.expansion_card() if exported.is_words else exported, folder)
    return exported, record
