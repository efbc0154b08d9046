"""What the channel trainers (``train words``, ``train pure``) share: training domains with their
validation splits, the start of a run, their options parsed from one dataclass, a keyed feature cache, and
validation as the mean nDCG@10 over the domains.

These trainers train small heads over a frozen backbone read once, in a plain loop; the CSPLADE / Lion
training on transformers' ``Trainer`` (``train/contrastive.py``) has its own data and options.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from csplade_pyserini.errors import InputError


@dataclass
class Split:
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


@dataclass
class Domain:
    name: str
    folder: Path
    train: Split
    validation: Split
    validation_source: str


def load_domain(folder: str | Path, held_out: int, seed: int) -> Domain:
    """A BEIR folder with a ``train`` split; validation is its ``dev`` split, else ``held_out`` train queries."""
    from csplade_pyserini.datasets import beir_file, load_qrels, read_queries

    folder = Path(folder)
    queries = read_queries(beir_file(folder, "queries"))
    train_qrels = load_qrels(beir_file(folder, "qrels", "train"))
    dev_path = beir_file(folder, "qrels", "dev", required=False)

    def split(qrels: dict) -> Split:
        missing = [q for q in qrels if q not in queries]
        if missing:
            raise InputError(f"{len(missing)} judged queries have no text, e.g. {missing[:3]}", path=folder)
        return Split({q: queries[q] for q in qrels}, qrels)

    if dev_path is not None:
        return Domain(folder.name, folder, split(train_qrels), split(load_qrels(dev_path)), "dev split")
    ids = sorted(train_qrels)
    random.Random(seed).shuffle(ids)
    if len(ids) <= held_out:
        raise InputError(f"{len(ids)} training queries cannot spare {held_out} for validation", path=folder)
    held = set(ids[:held_out])
    return Domain(folder.name, folder, split({q: r for q, r in train_qrels.items() if q not in held}),
                  split({q: r for q, r in train_qrels.items() if q in held}),
                  f"{held_out} train queries held out (seed {seed})")


@dataclass
class Run:
    out: Path
    rng: random.Random
    begin: float
    domains: list[Domain]


def start_run(args) -> Run:
    """Threads and seeds set, ``--output-dir`` claimed (an earlier run's model and log are refused unless
    ``--overwrite-output-dir``), every ``--data`` domain loaded, two domains of one name refused."""
    from csplade_pyserini.train.trainer import claim_output_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    claim_output_dir(out, args.overwrite_output_dir, written=("model/best", "train_log.jsonl"))
    begin = time.perf_counter()
    domains = [load_domain(folder, args.held_out, args.seed) for folder in args.data]
    names = [d.name for d in domains]
    if len(set(names)) != len(names):
        raise InputError(f"two --data folders share a name: {names}", field="data")
    return Run(out, random.Random(args.seed), begin, domains)


def parse_options(options: type, prog: str, description: str, argv: list[str] | None):
    """``options`` (a dataclass) from the command line: ``HfArgumentParser`` makes each field a flag with its
    default and help, as the other training commands do (``train/config.py``)."""
    from transformers import HfArgumentParser

    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    parser = HfArgumentParser(options, prog=prog, description=description, formatter_class=Formatter)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


def keyed_cache(path: Path | None, key: str, build: Callable[[], dict[str, Any]], what: str) -> dict[str, Any]:
    """The tensors ``build`` returns, read back from ``path`` when it was written for the same ``key`` (any
    other file there is rebuilt, never reused) and written there whole otherwise."""
    import logging

    logger = logging.getLogger(__name__)
    if path is not None and path.exists():
        blob = torch.load(path, weights_only=True)
        if blob.get("key") == key:
            logger.info("%s read from %s", what, path)
            return blob
        logger.warning("%s was built for other texts or another model: building it again", path)
    blob = {"key": key, **build()}
    if path is not None:
        from csplade_pyserini.atomic import atomic_file

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, mode="wb", encoding=None) as handle:
            torch.save(blob, handle)
    return blob


def validate_domains(domains: Sequence[Domain], rank: Callable[[Domain], Mapping[str, Mapping[str, float]]]
                     ) -> dict[str, float]:
    """nDCG@10 of each domain's validation queries ranked by ``rank(domain)``, and their mean."""
    import ir_measures

    from csplade_pyserini.evaluate.measures import evaluate_run

    scores = {domain.name: evaluate_run(rank(domain), domain.validation.qrels, [ir_measures.nDCG @ 10])["nDCG@10"]
              for domain in domains}
    scores["mean"] = sum(scores.values()) / len(domains)
    return scores


def train_steps(run: Run, args, groups: Mapping[str, Sequence], loss: Callable[[Domain, list], dict[str, torch.Tensor]],
                optimizer, schedule, validate: Callable[[], dict[str, float]], snapshot: Callable[[], Any],
                name: str, start: str) -> tuple[dict[str, float], Any, list[dict]]:
    """The channel trainers' loop: ``args.steps`` optimiser steps, each on ``args.batch_size`` training groups
    of one domain drawn in proportion to the domains' groups, gradients clipped at norm 1; validation at step
    0, every ``args.eval_steps`` and the end. Returns the best validation (with its step), ``snapshot()`` of the
    model then, and the log (one entry per step, ``loss``'s named parts rounded)."""
    import logging

    from tqdm import tqdm

    logger = logging.getLogger(__name__)
    best = {"step": 0, **validate()}
    best_state = snapshot()
    log: list[dict] = [{"step": 0, "validation": best}]
    logger.info("step 0 (%s): validation nDCG@10 %s", start, best)
    weights = [len(groups[d.name]) for d in run.domains]
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    for step in tqdm(range(1, args.steps + 1), desc=f"train {name}", unit="step", dynamic_ncols=True):
        domain = run.rng.choices(run.domains, weights)[0]
        batch = run.rng.sample(groups[domain.name], min(args.batch_size, len(groups[domain.name])))
        parts = loss(domain, batch)
        optimizer.zero_grad()
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        entry = {"step": step, "domain": domain.name, **{k: round(float(v.detach()), 5) for k, v in parts.items()}}
        if step % args.eval_steps == 0 or step == args.steps:
            entry["validation"] = validate()
            logger.info("step %d: loss %.4f, validation nDCG@10 %s", step, entry["loss"], entry["validation"])
            if entry["validation"]["mean"] > best["mean"]:
                best = {"step": step, **entry["validation"]}
                best_state = snapshot()
        log.append(entry)
    return best, best_state, log


def validation_notes(domains: Sequence[Domain], best: Mapping[str, float], log: Sequence[dict]) -> dict[str, Any]:
    """A channel trainer's ``notes.validation``: what each domain validated on, the step kept with its
    nDCG@10, and the curve of validation means."""
    return {"selected_on": {d.name: d.validation_source for d in domains}, "step kept": best["step"],
            "ndcg@10": {k: round(v, 4) for k, v in best.items() if k != "step"},
            "curve": [(e["step"], round(e["validation"]["mean"], 4)) for e in log if "validation" in e]}


def write_model(out: Path, card, write_files: Callable[[Path], Any], log: Sequence[dict]) -> Path:
    """``OUTPUT_DIR/model/best`` (``write_files(folder)``, then the card) and ``OUTPUT_DIR/train_log.jsonl`` (one
    JSON line per entry), each written whole or not at all; returns the model folder."""
    import json

    from csplade_pyserini.atomic import atomic_dir, atomic_file

    target = out / "model" / "best"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target) as tmp:
        write_files(Path(tmp))
        card.save(tmp)
    with atomic_file(out / "train_log.jsonl") as handle:
        handle.write("".join(json.dumps(e) + "\n" for e in log))
    return target
