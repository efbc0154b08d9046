"""Export a model for other runtimes.

    python -m csplade_pyserini.export onnx --encoder csplade --output export/csplade.onnx

``onnx``: the sparse encoder's forward pass (token ids to the pooled vector, before top-k and quantisation) as
an ONNX graph, float32 and ONNX Runtime's dynamic int8, with the card (``runtime: onnx``) and its weight files
beside it. ``--encoder csplade:export/csplade.onnx`` then runs the query side in ONNX Runtime
(``runtime=onnx-int8`` for the int8 graph); any card with ``runtime=onnx`` also exports on first use into the
cache, so this command is for a folder you carry elsewhere. (Sentence Transformers:
``python -m csplade_pyserini.train export --sentence-transformers``.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from csplade_pyserini.cli import run_cli, set_threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m csplade_pyserini.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    formats = parser.add_subparsers(dest="format", required=True)
    onnx = formats.add_parser("onnx", help="the sparse encoder as an ONNX graph (float32 and int8)")
    onnx.add_argument("--encoder", default="csplade", help="encoder spec, csplade[:MODEL][,key=value...]")
    onnx.add_argument("--output", required=True, help="export folder (written whole or not at all)")
    onnx.add_argument("--overwrite", action="store_true", help="replace an existing export (only one this toolkit wrote)")
    onnx.add_argument("--threads", type=int, default=None, help="torch threads while exporting")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from csplade_pyserini.atomic import atomic_dir, check_output, clear_stale_temporaries, output_lock
    from csplade_pyserini.model.card import CARD_NAME
    from csplade_pyserini.model.onnx import RECORD_FILE, export_model
    from csplade_pyserini.model.spec import card_from_spec

    set_threads(args.threads)
    card, base_dir = card_from_spec(args.encoder)
    check_output(args.output, [base_dir] if base_dir is not None else [], args.overwrite,
                 lambda folder: (folder / RECORD_FILE).exists() and (folder / CARD_NAME).exists(), "export")
    with output_lock(args.output):
        clear_stale_temporaries(args.output)
        with atomic_dir(args.output) as tmp:
            exported, record = export_model(card, base_dir, Path(tmp))
    print(json.dumps({"output": str(args.output), "card": CARD_NAME, "runtime": exported.runtime,
                      "fingerprint": record["fingerprint"], "files": record["files"], "vocab": record["vocab"]}, indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main)
