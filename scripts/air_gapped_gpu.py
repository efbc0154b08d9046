"""The GPU recipe for an air-gapped GPU node, prepared on a networked CPU machine: a self-contained bundle
carried over in parts, then one command on the node.

This is a hand-over script, not part of the package: it serves GPU nodes with no network that take files in
transfers of at most 64 MiB and whose Python has PyTorch, transformers, peft and accelerate but not the rest
of this toolkit's dependencies (no gguf, no ir-measures, no Pyserini). On a GPU machine with a normal install,
run the training commands themselves with ``--device cuda`` instead. So:

    # here (CPU, from the repository root): everything the run needs, in transfers of at most 60 MiB each
    python scripts/air_gapped_gpu.py bundle --data ../shared/data/beir/scifact \
        --negatives runs/train/cpu-recipe/negatives.bm25.trec --teacher-scores runs/train/cpu-recipe/teacher.txt \
        --output-dir gpu-bundle
    # there (a copy of the repository): carry gpu-bundle/transfer-1 in a first call (it stays on the warm
    # machine), then gpu-bundle/transfer-2 in a second call that runs
    PYTHONPATH=. python3 scripts/air_gapped_gpu.py recipe --bundle gpu-bundle --output-dir $OUT/run

The backbone travels as the original GGUF file split in parts (98 MB: two transfers), checked against
the manifest's SHA-256 and de-quantised by :mod:`csplade_pyserini.model.gguf_reader` (bit-exact with
transformers' GGUF loading). The run is ``contrastive`` with ``configs/gpu-smollm2.yaml``: the corrected
CSPLADE objective with LoRA on every layer, a full forward per step, validated on held-out training
queries against the whole corpus; it writes a checkpoint and ``validation.json``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path

from csplade_pyserini.errors import InputError

logger = logging.getLogger(__name__)

GPU_CONFIG = Path(__file__).resolve().parent.parent / "csplade_pyserini" / "configs" / "gpu-smollm2.yaml"
MANIFEST = "manifest.json"
PART_MB = 60


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bundle(data: str | Path, negatives: str | Path, teacher_scores: str | Path | None, output_dir: str | Path,
                 backbone: str = "smollm2", part_mb: int = PART_MB) -> dict:
    """Split everything the GPU run needs into ``transfer-N`` folders of at most ``part_mb`` MiB each."""
    from csplade_pyserini.datasets import beir_file
    from csplade_pyserini.model.backbone import materialise, resolve_backbone

    source = resolve_backbone(backbone)
    if source.kind != "gguf":
        raise InputError("the GPU bundle carries the backbone as a GGUF file (e.g. smollm2)", field="backbone")
    gguf = Path(source.location) / source.gguf_file
    converted = Path(materialise(source).location)
    data = Path(data)
    out = Path(output_dir)
    if out.exists():
        shutil.rmtree(out)
    staging = out / ".staging"
    staging.mkdir(parents=True)
    files: list[tuple[str, Path]] = []  # (name in the bundle, source file)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                 "chat_template.jinja"):
        if (converted / name).exists():
            files.append((f"backbone/{name}", converted / name))
    corpus = beir_file(data, "corpus")
    with (gzip.open if corpus.suffix == ".gz" else open)(corpus, "rb") as src, \
            gzip.open(staging / "corpus.jsonl.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    files.append(("data/corpus.jsonl.gz", staging / "corpus.jsonl.gz"))
    queries = beir_file(data, "queries")
    files.append((f"data/{queries.name}", queries))
    files.append(("data/qrels/train.tsv", beir_file(data, "qrels", "train")))
    files.append(("negatives.trec", Path(negatives)))
    if teacher_scores:
        files.append(("teacher.txt", Path(teacher_scores)))
    limit = part_mb << 20
    parts = []
    with open(gguf, "rb") as handle:
        index = 0
        while chunk := handle.read(limit - (1 << 20)):
            part = staging / f"backbone.gguf.{index:02d}"
            part.write_bytes(chunk)
            parts.append(part)
            index += 1
    files += [(f"backbone/{p.name}", p) for p in parts]
    # first fit by size: the big parts first, small files wherever they fit
    transfers: list[list[tuple[str, Path]]] = []
    sizes: list[int] = []
    for name, path in sorted(files, key=lambda f: -f[1].stat().st_size):
        size = path.stat().st_size
        for i, used in enumerate(sizes):
            if used + size <= limit:
                transfers[i].append((name, path))
                sizes[i] += size
                break
        else:
            transfers.append([(name, path)])
            sizes.append(size)
    manifest = {"gguf": gguf.name, "gguf_parts": [f"backbone/{p.name}" for p in parts], "files": {},
                "transfers": []}
    for number, group in enumerate(transfers, start=1):
        folder = out / f"transfer-{number}"
        names = []
        for name, path in group:
            target = folder / "gpu-bundle" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            manifest["files"][name] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
            names.append(name)
        manifest["transfers"].append({"folder": f"transfer-{number}", "bytes": sizes[number - 1], "files": names})
    shutil.rmtree(staging)
    for number in range(1, len(transfers) + 1):
        (out / f"transfer-{number}" / "gpu-bundle" / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    logger.info("GPU bundle in %s: %d transfers of %s MiB", out, len(transfers),
                ", ".join(f"{s / 2 ** 20:.1f}" for s in sizes))
    return manifest


def unpack_bundle(bundle: str | Path, work: str | Path) -> dict[str, Path]:
    """Check every file against the manifest, re-assemble and de-quantise the backbone into a Hugging Face
    folder; returns the paths the run needs."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from csplade_pyserini.model.gguf_reader import read_gguf_state_dict

    bundle, work = Path(bundle), Path(work)
    manifest = json.loads((bundle / MANIFEST).read_text())
    missing = [n for n in manifest["files"] if not (bundle / n).exists()]
    if missing:
        raise InputError(f"the bundle lacks {len(missing)} files (first: {missing[0]}); carry every transfer "
                         f"folder of {MANIFEST}", path=bundle)
    for name, meta in manifest["files"].items():
        if _sha256(bundle / name) != meta["sha256"]:
            raise InputError("file differs from the manifest (a broken transfer?)", path=bundle / name)
    backbone = work / "backbone"
    if not (backbone / "model.safetensors").exists():
        backbone.mkdir(parents=True, exist_ok=True)
        gguf = work / manifest["gguf"]
        with open(gguf, "wb") as out:
            for part in manifest["gguf_parts"]:
                out.write((bundle / part).read_bytes())
        config = json.loads((bundle / "backbone" / "config.json").read_text())
        state = read_gguf_state_dict(gguf, config["num_attention_heads"], config["num_key_value_heads"])
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
        if config.get("tie_word_embeddings", True):
            tensors.pop("lm_head.weight", None)
        save_file(tensors, str(backbone / "model.safetensors"), metadata={"format": "pt"})
        for path in (bundle / "backbone").iterdir():
            if ".gguf." not in path.name:
                shutil.copyfile(path, backbone / path.name)
        gguf.unlink()
    data = work / "data"
    if not (data / "corpus.jsonl").exists():
        (data / "qrels").mkdir(parents=True, exist_ok=True)
        with gzip.open(bundle / "data" / "corpus.jsonl.gz", "rb") as src, open(data / "corpus.jsonl", "wb") as dst:
            shutil.copyfileobj(src, dst)
        for path in (bundle / "data").iterdir():
            if path.is_file() and path.name != "corpus.jsonl.gz":
                shutil.copyfile(path, data / path.name)
        shutil.copyfile(bundle / "data" / "qrels" / "train.tsv", data / "qrels" / "train.tsv")
    paths = {"backbone": backbone, "data": data, "negatives": bundle / "negatives.trec"}
    if (bundle / "teacher.txt").exists():
        paths["teacher"] = bundle / "teacher.txt"
    return paths


def bundle_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/air_gapped_gpu.py bundle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BEIR folder with a train split")
    parser.add_argument("--negatives", required=True, help="TREC run of candidate negatives (mine-negatives)")
    parser.add_argument("--teacher-scores", default=None, help="teacher scores (score-teacher)")
    parser.add_argument("--output-dir", default="gpu-bundle")
    parser.add_argument("--part-mb", type=int, default=PART_MB, help="MiB per transfer")
    args = parser.parse_args(argv)
    manifest = write_bundle(args.data, args.negatives, args.teacher_scores, args.output_dir, part_mb=args.part_mb)
    for transfer in manifest["transfers"]:
        print(f"{args.output_dir}/{transfer['folder']}: {transfer['bytes'] / 2 ** 20:.1f} MiB, "
              f"{len(transfer['files'])} files")
    return 0


def recipe_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 scripts/air_gapped_gpu.py recipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="the folder holding every transfer's files and manifest.json")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--work", default=None, help="where the backbone and data are unpacked (default OUTPUT/work)")
    parser.add_argument("--config", default=str(GPU_CONFIG))
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --, options for contrastive")
    args = parser.parse_args(argv)
    from csplade_pyserini.train.config import parse_arguments
    from csplade_pyserini.train.contrastive import run_contrastive
    from csplade_pyserini.train.trainer import read_log

    out = Path(args.output_dir)
    paths = unpack_bundle(args.bundle, args.work or out / "work")
    options = ["--config", args.config, "--backbone", str(paths["backbone"]), "--data", str(paths["data"]),
               "--run", str(paths["negatives"]), "--output-dir", str(out / "run")]
    if "teacher" in paths:
        options += ["--teacher-scores", str(paths["teacher"])]
    run_contrastive(*parse_arguments("contrastive", options + [a for a in args.extra if a != "--"]))
    evals = [{"step": r["step"], **{k[5:]: v for k, v in r.items() if k.startswith("eval_")}}
             for r in read_log(out / "run", "eval")]
    (out / "validation.json").write_text(json.dumps(evals, indent=1) + "\n")
    best = max(evals, key=lambda e: e.get("ndcg@10", -1)) if evals else None
    logger.info("validation nDCG@10 by step: %s; best: %s", [(e["step"], round(e.get("ndcg@10", 0), 4)) for e in evals],
                best)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"bundle": bundle_main, "recipe": recipe_main}
    if not argv or argv[0] not in commands:
        print(__doc__.strip() + "\n\ncommands: bundle, recipe  (COMMAND --help for its options)",
              file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    from csplade_pyserini.cli import run_cli

    run_cli(main)
