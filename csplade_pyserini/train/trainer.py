"""Contrastive training on transformers' ``Trainer``: what is ours is the loss, the batches and the model.

The Trainer brings gradient accumulation, the learning-rate schedule, mixed precision, checkpoints
with exact resume (optimizer, scheduler, RNG states; the batch sampler is a pure function of seed and
epoch), logging and the distributed engines. This subclass adds:

* ``compute_loss``: queries and documents through one :class:`~.model.SparseBiEncoder`, then the
  run's :class:`~.losses.SpladeLoss`; its named parts are averaged into the logs;
* parameter groups with their own learning rates (backbone / lexical head / logit bias / score scale);
* ``evaluate``: the whole-corpus validation of held-out training queries; the best model so far is
  exported to ``OUTPUT_DIR/best``;
* checkpoints that are model folders first (``csplade:OUTPUT_DIR/checkpoint-N`` loads), plus the
  trainable tensors for resuming.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from csplade_pyserini.train.checkpoint import BEST_DIR, export_model

logger = logging.getLogger(__name__)

LOG_NAME = "train_log.jsonl"
TRAINABLE_NAME = "trainable.safetensors"


class JsonLogCallback(TrainerCallback):
    """``OUTPUT_DIR/train_log.jsonl``: every logged step and validation, one JSON object per line."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOG_NAME

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0 and self.path.exists() and state.is_world_process_zero:
            self.path.unlink()  # a fresh run; a resumed one keeps (and truncates below) its log
        elif self.path.exists() and state.is_world_process_zero:
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= state.global_step]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            event = ("eval" if any(k.startswith("eval_") for k in logs) else
                     "summary" if "train_runtime" in logs else "train")
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"event": event, "step": state.global_step, **logs}) + "\n")


def read_log(path: str | Path, event: str | None = "train") -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [e for e in entries if event is None or e.get("event") == event]


class _Indices(torch.utils.data.Dataset):
    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):
        return index  # an (example, epoch) pair from the batch sampler, handed to the collator as it is


class SparseTrainer(Trainer):
    """The model (:class:`~.model.SparseBiEncoder`) owns its loss and declares its optimizer groups; the
    FLOPS ramp follows the step through :class:`~.schedules.FlopsScheduleCallback`."""

    def __init__(self, model, args, collator, batch_sampler, validation=None, **kwargs):
        from csplade_pyserini.train.schedules import FlopsScheduleCallback

        self.batch_sampler = batch_sampler
        self.validation = validation
        self.best_metric: float | None = None
        self._parts: dict[str, list[float]] = defaultdict(list)
        if args.eval_strategy not in (None, "no") and validation is None:
            from csplade_pyserini.errors import InputError

            raise InputError("--eval-strategy needs validation queries (--validation-queries N with a BEIR folder)",
                             field="eval_strategy")
        super().__init__(model=model, args=args, data_collator=collator, train_dataset=_Indices(len(collator.examples)),
                         eval_dataset=_Indices(1) if validation is not None else None,
                         callbacks=[JsonLogCallback(args.output_dir), FlopsScheduleCallback(model.loss_fn)],
                         **kwargs)

    # --- data ----------------------------------------------------------------------------------------
    def get_train_dataloader(self):
        loader = torch.utils.data.DataLoader(self.train_dataset, batch_sampler=self.batch_sampler,
                                             collate_fn=self.data_collator, num_workers=0)
        return self.accelerator.prepare(loader)

    # --- loss ----------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        parts = model(**inputs)
        with torch.no_grad():
            for name, value in parts.items():
                if name != "loss":
                    self._parts[name].append(float(value))
            self._parts["score_scale"].append(self.accelerator.unwrap_model(model).score_scale())
        return (parts["loss"], parts) if return_outputs else parts["loss"]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._parts and "loss" in logs:
            logs.update({k: round(sum(v) / len(v), 4) for k, v in self._parts.items() if v})
            self._parts.clear()
        super().log(logs, start_time)

    # --- optimiser ----------------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        args = self.args
        groups = self.accelerator.unwrap_model(self.model).parameter_groups()
        rates = {"backbone": args.learning_rate, "head": args.head_learning_rate or args.learning_rate,
                 "bias": args.bias_learning_rate or args.learning_rate, "scale": args.scale_learning_rate}
        param_groups = [{"params": params, "lr": rates[name], "name": name,
                         "weight_decay": args.weight_decay if name == "backbone" else 0.0}
                        for name, params in groups.items()]
        if not param_groups:
            raise ValueError("nothing to train: every parameter is frozen")
        if str(getattr(args.optim, "value", args.optim)).lower() == "sgd":  # updates linear in the gradients
            self.optimizer = torch.optim.SGD(param_groups)
        else:
            self.optimizer = torch.optim.AdamW(param_groups, betas=(args.adam_beta1, args.adam_beta2),
                                               eps=args.adam_epsilon)
        for group in param_groups:
            logger.info("trainable %-8s %10d parameters, lr %g", group["name"],
                        sum(p.numel() for p in group["params"]), group["lr"])
        return self.optimizer

    # --- validation ---------------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if self.validation is None:
            return {}
        model = self.accelerator.unwrap_model(self.model)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in self.validation.run(model, self.args.device).items()}
        self.log(dict(metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        score = metrics.get(f"{metric_key_prefix}_ndcg@10")
        if self.args.should_save and score is not None and (self.best_metric is None or score > self.best_metric):
            self.best_metric = score
            notes = {"validation": {"step": self.state.global_step, "ndcg@10": round(score, 4)}}
            export_model(Path(self.args.output_dir) / BEST_DIR, model.encoder, notes=notes)
            logger.info("step %d: validation nDCG@10 %.4f, the best so far (saved to %s/%s)",
                        self.state.global_step, score, self.args.output_dir, BEST_DIR)
        return metrics

    # --- checkpoints --------------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        from csplade_pyserini.atomic import save_tensors

        model = self.accelerator.unwrap_model(self.model)
        os.makedirs(output_dir, exist_ok=True)
        export_model(Path(output_dir), model.encoder, notes={"step": self.state.global_step}, atomic=False)
        state = {k: v.float().contiguous() for k, v in model.trainable_state().items()}
        save_tensors(state, os.path.join(output_dir, TRAINABLE_NAME))
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        from safetensors.torch import load_file

        model = self.accelerator.unwrap_model(model or self.model)
        path = os.path.join(resume_from_checkpoint, TRAINABLE_NAME)
        if not os.path.exists(path):
            raise ValueError(f"{resume_from_checkpoint} holds no {TRAINABLE_NAME}: not a checkpoint of this trainer")
        model.load_trainable_state(load_file(path), source=path)
        state_file = Path(resume_from_checkpoint) / "trainer_state.json"
        if state_file.exists():
            history = json.loads(state_file.read_text()).get("log_history", [])
            scores = [h["eval_ndcg@10"] for h in history if "eval_ndcg@10" in h]
            self.best_metric = max(scores) if scores else None

    def _load_best_model(self) -> None:  # the best model is exported as it appears, never reloaded
        return None


def check_resumable(checkpoint: str | Path | None) -> None:
    """Refuse, in one line naming the file, a checkpoint whose files a resume would choke on (a killed save,
    a full disk): its ``trainer_state.json`` must parse and its weight files must read in full."""
    if not checkpoint:
        return
    from safetensors import safe_open

    from csplade_pyserini.errors import InputError

    folder = Path(checkpoint)
    if not folder.is_dir():
        raise InputError("no such checkpoint folder", path=folder, field="resume_from_checkpoint")
    state = folder / "trainer_state.json"
    if state.exists():
        try:
            json.loads(state.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"not a readable trainer state ({exc}): the checkpoint is damaged; resume from an "
                             "earlier one", path=state) from None
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt") as handle:
                for name in handle.keys():
                    handle.get_tensor(name)
        except Exception as exc:  # safetensors raises its own error type for a truncated or corrupt file
            raise InputError(f"unreadable weights ({exc}): the checkpoint is damaged; resume from an earlier one",
                             path=weights) from None


def resolve_resume(training_args) -> str | None:
    """``--resume-from-checkpoint``: a folder, or ``latest`` (``auto``/``true``) for the output folder's last
    checkpoint; checked (:func:`check_resumable`) before anything is loaded."""
    resume = training_args.resume_from_checkpoint
    if resume in (True, "latest", "auto", "true", "True"):
        from transformers.trainer_utils import get_last_checkpoint

        resume = get_last_checkpoint(training_args.output_dir) if Path(training_args.output_dir).is_dir() else None
    resume = resume or None
    check_resumable(resume)
    return resume


TRAINING_OUTPUTS = ("best", "final", "checkpoint-*", LOG_NAME)


def claim_output_dir(output_dir: str | Path, overwrite: bool, resume=None,
                     written: Sequence[str] = TRAINING_OUTPUTS) -> None:
    """Refuse an output folder that holds an earlier training run's output, unless the run resumes it or
    ``overwrite`` (``--overwrite-output-dir``) is given; then only what training writes there (the
    ``written`` patterns) is removed and every other file is kept. A run must never silently destroy a
    trained model or a user's files."""
    from csplade_pyserini.errors import InputError

    folder = Path(output_dir)
    earlier = sorted({p for pattern in written for p in folder.glob(pattern)})
    if not earlier or resume:
        return
    if not overwrite:
        raise InputError(f"{earlier[0]} holds an earlier training run's output: pass --overwrite-output-dir to "
                         "replace what training wrote there (other files are kept) or --resume-from-checkpoint "
                         "to continue it", path=folder, field="output_dir")
    for path in earlier:
        logger.info("--overwrite-output-dir: removing %s", path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def total_steps(args, steps_per_epoch: int) -> int:
    if args.max_steps and args.max_steps > 0:
        return args.max_steps
    return max(1, math.ceil(args.num_train_epochs * steps_per_epoch / max(1, args.gradient_accumulation_steps)))
