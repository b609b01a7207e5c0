"""The one training loop of every trainable model: branches, mixtures, routers, the scale-conditioned model.

What a batch is, its loss, validation and saving the best model belong to a small task
object (:class:`Task`; :mod:`adascale.training.tasks` has the frame and array tasks). The
loop owns everything else, once:

* the hooks of a warm start and of partial training: ``init_from`` (copy a saved model
  directory's weights into the model, or each of a mixture's branches from its anchor's
  directory) and ``trainable`` (parameter-name prefixes to train; the rest get
  requires_grad False), so "router only" and "all unfrozen" are settings, not code;
* budget: ``max_epochs`` and ``max_steps`` (deterministic), ``time_budget_minutes`` as an
  upper bound on wall time; a run cut by it says so (``TrainResult.budget_hit``);
* learning rate: linear warm-up, then cosine decay over the step budget (a function of the
  step only, so the same settings give the same schedule on any machine);
* validation after every epoch (and at the start with ``validate_at_start``, and after a
  partial epoch when a budget ends it), the best epoch kept, early stopping after
  ``patience`` validations without a better ``mae['all']``; the model ends holding the best
  epoch's weights;
* optimizer steps over a seeded permutation of the items per epoch (seed, epoch), and torch's
  generator seeded per step from (seed, global step, rank), so a model that draws random
  numbers in training mode still resumes exactly;
* with an output directory: ``checkpoint.pt`` every ``checkpoint_every_steps`` steps and after
  every validation (atomic, ``weights_only=True`` to load) and ``log.jsonl`` (one line per
  validation). :meth:`TrainingLoop.resume` continues a killed run and reproduces the
  uninterrupted one bit for bit when no wall-clock bound is hit;
* a rich progress bar, or callbacks for callers that draw their own;
* data parallel (DDP): every process runs the same loop on its share of each global batch
  (the task splits it); rank 0 writes files and decides the wall-clock stop.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn

from adascale.errors import AdaScaleError
from adascale.files import atomic_write_bytes
from adascale.models.io import initialise_from
from adascale.training.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from adascale.training.distributed import DistributedContext

LOG_FILE = "log.jsonl"
#: The parts of a TrainResult that the same settings and seed reproduce on any machine (no times).
OUTCOME_KEYS = ("best_valid_mae", "best_epoch", "epochs", "steps", "stopped", "budget_hit")


class LoopSettings(BaseModel):
    """Optimisation, budgets and stopping of one training run (every task alike). The ``training``
    block of a training config extends it (:class:`adascale.training.config.TrainingSettings`), so a
    branch's training settings are loop settings as they stand."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Seeds weight initialisation and the frame order of every epoch: same seed, same numbers.")
    batch_size: int = Field(
        1, ge=1, description="Frames per optimizer step, over all processes (a multiple of the process count)."
    )
    learning_rate: float = Field(3e-3, gt=0, description="Peak AdamW learning rate.")
    final_learning_rate_factor: float = Field(
        0.02, gt=0, le=1, description="The cosine schedule decays to learning_rate x this at the end of the run."
    )
    warmup_steps: int = Field(20, ge=0, description="Steps of linear learning-rate warm-up.")
    schedule: Literal["cosine", "cosine_time", "constant"] = Field(
        "cosine",
        description="'cosine': decay over the step budget (max_steps, or max_epochs epochs: reproducible); "
        "'cosine_time': also over time_budget_minutes if that ends first (equal-wall-time comparisons, not "
        "reproducible); 'constant' after warm-up.",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    gradient_clip: float | None = Field(10.0, gt=0, description="Clip the gradient norm to this; null for no clipping.")
    max_epochs: int = Field(100, ge=1, description="Upper bound on passes over the training frames.")
    max_steps: int | None = Field(
        None,
        ge=0,
        description="Optimizer steps in total (the cosine decays over them); null: max_epochs epochs; "
        "0 (with validate_at_start) only scores the starting weights.",
    )
    epoch_items: int | None = Field(None, ge=1, description="Items per epoch, a fresh seeded subset each epoch; null: all.")
    drop_last: bool = Field(True, description="Drop an epoch's last incomplete batch (false: train on it too).")
    patience: int = Field(10, ge=1, description="Stop after this many validations without a better validation force MAE.")
    time_budget_minutes: float | None = Field(
        None,
        gt=0,
        description="Upper bound on wall time: stop (and validate a last time) within it, flagged as budget_hit; null for no limit. "
        "Budget by steps or epochs for reproducible runs.",
    )
    checkpoint_every_steps: int = Field(
        50, ge=1, description="Write the resumable checkpoint this often (and after every epoch)."
    )
    validate_at_start: bool = Field(False, description="Score the starting weights too (a warm start may be the best).")
    init_from: str | list[str] | dict[str, str] | None = Field(
        None,
        description="Warm start: a model directory whose weights the model starts from (a list: one directory per "
        "branch of a mixture; a map: submodule name -> directory); null starts from the seeded initialisation.",
    )
    trainable: list[str] | None = Field(
        None,
        description="Train only parameters whose names start with one of these prefixes (the rest frozen), "
        "e.g. ['router', 'energy_offsets']; [''] trains all; null: as the model is built.",
    )

    @model_validator(mode="after")
    def _zero_steps_validate(self) -> LoopSettings:
        if self.max_steps == 0 and not self.validate_at_start:
            raise ValueError("max_steps 0 trains nothing: it needs validate_at_start to score the starting weights")
        return self


class Task(Protocol):
    """What the loop trains. ``model``'s trainable parameters (requires_grad) are optimised and its
    state_dict checkpointed; ``stat_names`` name the running sums ``loss`` returns."""

    model: nn.Module
    stat_names: tuple[str, ...]
    units: str

    def __len__(self) -> int:
        """Training items (frames, samples)."""

    def loss(self, items: np.ndarray) -> tuple[Tensor, Tensor]:
        """(objective to back-propagate, this process's stats (len(stat_names),) float64) of the global batch ``items``."""

    def validate(self) -> dict:
        """``{"mae": {"all", "ions", "close_contact"}, ...}`` over all processes; ``mae['all']`` selects the best."""

    def train_summary(self, sums: list[float], steps: int) -> dict:
        """Log fields of an epoch's stats summed over processes and steps."""

    def save_best(self, metrics: dict) -> None:
        """Persist the current (best so far) model; called on the main process only."""


@dataclass
class RunState:
    """Counters a checkpoint carries; ``epoch_sums`` are the task's stats of the epoch so far."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    elapsed_s: float = 0.0
    best_mae: float = math.inf
    best_epoch: int = 0
    bad_validations: int = 0
    log_lines: int = 0
    epoch_sums: list[float] = field(default_factory=list)


@dataclass
class TrainResult:
    """How a run ended (MAEs in the task's units); ``history`` holds the log lines."""

    best_valid_mae: float
    best_epoch: int
    epochs: int
    steps: int
    elapsed_s: float
    stopped: str  # "max_epochs", "max_steps", "early_stopping" or "time_budget"
    budget_hit: bool  # the wall-clock upper bound cut the run
    resumed_at_step: int  # the checkpoint's step this process started from (0: a fresh run)
    session_steps: int  # optimizer steps this process ran
    history: list[dict] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        """The result without its history (what metrics.json records)."""
        return {key: value for key, value in asdict(self).items() if key != "history"}

    def outcome(self) -> dict:
        """What the same settings and seed reproduce on any machine (reports record it): no times, no session."""
        return {key: getattr(self, key) for key in OUTCOME_KEYS}


StepCallback = Callable[[int, int, str], None]  # (steps done, step budget, status)


class TrainingLoop:
    """Trains ``task`` under ``settings``; optionally :meth:`resume`, then :meth:`run`.

    out_dir: checkpoint and log (None: in memory only). config: the caller's settings, stored
    in the checkpoint; a resume may change only the keys in ``resumable`` (dotted).
    """

    def __init__(
        self,
        task: Task,
        settings: LoopSettings,
        out_dir: str | Path | None = None,
        *,
        context: DistributedContext | None = None,
        config: dict | None = None,
        resumable: Sequence[str] = (),
        show_progress: bool = False,
        on_step: StepCallback | None = None,
        on_validation: Callable[[dict], None] | None = None,
    ) -> None:
        self.task, self.settings = task, settings
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.context = context or DistributedContext()
        self.config, self.resumable = config or {}, tuple(resumable)
        self.show_progress = show_progress and self.context.is_main
        self.on_step, self.on_validation = on_step, on_validation
        n_items = len(task) if settings.epoch_items is None else min(settings.epoch_items, len(task))
        if settings.batch_size % self.context.world_size:
            raise AdaScaleError(f"batch_size {settings.batch_size} must be a multiple of the {self.context.world_size} processes")
        self.steps_per_epoch = n_items // settings.batch_size if settings.drop_last else -(-n_items // settings.batch_size)
        if self.steps_per_epoch == 0:
            raise AdaScaleError(f"batch_size {settings.batch_size} exceeds the {n_items} training items per epoch")
        self.n_items = n_items
        if settings.schedule == "cosine_time" and settings.time_budget_minutes is None:
            raise AdaScaleError("schedule 'cosine_time' decays over the wall-clock budget: set time_budget_minutes")
        if settings.init_from is not None:
            initialise_from(task.model, settings.init_from)
        if settings.trainable is not None:
            set_trainable(task.model, settings.trainable)
        self.parameters = [p for p in task.model.parameters() if p.requires_grad]
        if not self.parameters:
            raise AdaScaleError("nothing to train: every parameter of the model is frozen")
        self.optimizer = torch.optim.AdamW(self.parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay)
        self.state = RunState(epoch_sums=[0.0] * len(task.stat_names))
        self.best_state: dict | None = None
        self.history: list[dict] = []
        self.resumed_at_step = 0
        self.last_validation_s = 0.0

    @property
    def total_steps(self) -> int:
        """The step budget the schedule decays over."""
        by_epochs = self.settings.max_epochs * self.steps_per_epoch
        return by_epochs if self.settings.max_steps is None else min(by_epochs, self.settings.max_steps)

    # ----------------------------------------------------------------- checkpoints
    def resume(self) -> None:
        """Continue from ``checkpoint.pt`` in ``out_dir`` (same config except the ``resumable`` keys)."""
        if self.out_dir is None:
            raise AdaScaleError("resume needs the run directory that holds the checkpoint")
        checkpoint = load_checkpoint(self.out_dir / CHECKPOINT_FILE)
        changed = [key for key in _differences(checkpoint["config"], self.config) if key not in self.resumable]
        if changed:
            raise AdaScaleError(
                f"{self.out_dir}: cannot resume with different settings ({', '.join(changed)}); "
                f"only {', '.join(self.resumable) or 'nothing'} may change"
            )
        self.task.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.best_state = checkpoint.get("best_model")
        self.state = RunState(**checkpoint["progress"])
        self.resumed_at_step = self.state.global_step
        if not self.context.is_main:  # rank 0 carries the epoch's running sums
            self.state.epoch_sums = [0.0] * len(self.state.epoch_sums)
        log = self.out_dir / LOG_FILE
        if log.is_file():
            self.history = [json.loads(line) for line in log.read_text().splitlines()[: self.state.log_lines]]
            if self.context.is_main:
                atomic_write_bytes(log, lambda f: f.write("".join(json.dumps(line) + "\n" for line in self.history).encode()))

    def save_checkpoint(self) -> None:
        sums = self.context.sum(torch.tensor(self.state.epoch_sums, dtype=torch.float64, device=self.context.device)).tolist()
        if self.out_dir is None or not self.context.is_main:
            return
        save_checkpoint(
            self.out_dir / CHECKPOINT_FILE,
            {
                "model": self.task.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "best_model": self.best_state,
                "progress": asdict(self.state) | {"epoch_sums": sums},
                "config": self.config,
            },
        )

    # ----------------------------------------------------------------- training
    def learning_rate(self, elapsed_s: float = 0.0) -> float:
        """Linear warm-up, then cosine decay over :attr:`total_steps` (or constant). ``cosine_time``
        decays over the wall-clock budget when that ends first (equal-wall-time comparisons; the
        numbers then depend on the machine's speed)."""
        s = self.settings
        warmup = min(1.0, (self.state.global_step + 1) / (s.warmup_steps + 1))
        if s.schedule == "constant":
            return s.learning_rate * warmup
        progress = self.state.global_step / self.total_steps
        if s.schedule == "cosine_time":
            progress = max(progress, elapsed_s / (60.0 * s.time_budget_minutes))
        progress = min(progress, 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return s.learning_rate * warmup * (s.final_learning_rate_factor + (1.0 - s.final_learning_rate_factor) * cosine)

    def step(self, items: np.ndarray, elapsed_s: float = 0.0) -> float:
        """One optimizer step on the global batch ``items``; returns this process's first stat (its loss share)."""
        torch.manual_seed(step_seed(self.settings.seed, self.state.global_step, self.context.rank))
        objective, stats = self.task.loss(items)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(elapsed_s)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if self.settings.gradient_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.settings.gradient_clip)
        self.optimizer.step()
        values = stats.detach().double().tolist()
        self.state.epoch_sums = [a + b for a, b in zip(self.state.epoch_sums, values)]
        return values[0]

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The items of ``epoch`` in training order: a permutation seeded by (seed, epoch), its first ``n_items``."""
        return np.random.default_rng([self.settings.seed, epoch]).permutation(len(self.task))[: self.n_items]

    def run(self) -> TrainResult:
        """Train until a budget, early stopping or the wall-clock bound; the model ends at its best epoch."""
        devices = [self.context.device] if self.context.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the per-step seeding leaves the caller's generator alone
            result = self._run()
        return result

    def _run(self) -> TrainResult:
        s, state = self.settings, self.state
        if self.out_dir is not None and self.context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        budget_s = None if s.time_budget_minutes is None else 60.0 * s.time_budget_minutes
        start = time.monotonic() - state.elapsed_s
        stopped = "max_epochs"
        if s.validate_at_start and state.log_lines == 0:
            self._validate(start, partial=False, epoch=0)
            self.save_checkpoint()
        self.task.model.train()
        with _progress_bar(self.show_progress) as bar:
            task = bar.add_task("", total=self.steps_per_epoch, status="")
            while state.epoch < s.max_epochs:
                if state.global_step >= self.total_steps:
                    stopped = "max_steps"
                    break
                order = self.epoch_order(state.epoch)
                bar.update(task, completed=state.step_in_epoch, description=f"epoch {state.epoch + 1}")
                steps_this_session = 0
                for k in range(state.step_in_epoch, self.steps_per_epoch):
                    if state.global_step >= self.total_steps:
                        stopped = "max_steps"
                        break
                    elapsed = time.monotonic() - start
                    if self.context.broadcast_flag(budget_s is not None and elapsed + self.last_validation_s > budget_s):
                        stopped = "time_budget"
                        break
                    loss = self.step(order[k * s.batch_size : (k + 1) * s.batch_size], elapsed)
                    state.step_in_epoch, state.global_step = k + 1, state.global_step + 1
                    steps_this_session += 1
                    if state.global_step % s.checkpoint_every_steps == 0:
                        state.elapsed_s = time.monotonic() - start
                        self.save_checkpoint()
                    status = f"loss {loss * self.context.world_size:.4g}"
                    bar.update(task, advance=1, status=status)
                    if self.on_step is not None:
                        self.on_step(state.global_step, self.total_steps, status)
                if stopped in ("time_budget", "max_steps") and steps_this_session == 0 and state.step_in_epoch == 0:
                    break  # nothing new to validate
                finished_epoch = state.step_in_epoch == self.steps_per_epoch
                metrics = self._validate(start, partial=not finished_epoch, epoch=state.epoch + 1)
                bar.update(task, status=f"valid MAE {metrics['mae']['all']:.4g} {self.task.units}")
                if finished_epoch:
                    state.epoch, state.step_in_epoch = state.epoch + 1, 0
                    state.epoch_sums = [0.0] * len(state.epoch_sums)
                self.save_checkpoint()
                if stopped in ("time_budget", "max_steps"):
                    break
                if state.bad_validations >= s.patience:
                    stopped = "early_stopping"
                    break
        state.elapsed_s = time.monotonic() - start
        if self.best_state is not None:
            self.task.model.load_state_dict(self.best_state)
        self.task.model.eval()
        return TrainResult(
            best_valid_mae=state.best_mae,
            best_epoch=state.best_epoch,
            epochs=state.epoch,
            steps=state.global_step,
            elapsed_s=state.elapsed_s,
            stopped=stopped,
            budget_hit=stopped == "time_budget",
            resumed_at_step=self.resumed_at_step,
            session_steps=state.global_step - self.resumed_at_step,
            history=list(self.history),
        )

    # ----------------------------------------------------------------- validation and log
    def _validate(self, start: float, *, partial: bool, epoch: int) -> dict:
        """Validate, track the best model, append the log line; returns the task's metrics."""
        state = self.state
        validation_start = time.monotonic()
        self.task.model.eval()
        metrics = self.task.validate()
        self.task.model.train()
        self.last_validation_s = time.monotonic() - validation_start
        state.elapsed_s = time.monotonic() - start
        sums = self.context.sum(torch.tensor(state.epoch_sums, dtype=torch.float64, device=self.context.device)).tolist()
        mae = metrics["mae"]["all"]
        improved = mae < state.best_mae
        if improved:
            state.best_mae, state.best_epoch, state.bad_validations = mae, epoch, 0
            self.best_state = copy.deepcopy(self.task.model.state_dict())
        else:
            state.bad_validations += 1
        state.log_lines += 1
        line = {
            "epoch": epoch,
            "partial": partial,
            "step": state.global_step,
            "learning_rate": self.optimizer.param_groups[0]["lr"] if state.global_step else None,
            **(self.task.train_summary(sums, state.step_in_epoch or self.steps_per_epoch) if state.global_step else {}),
            "valid_force_mae": metrics["mae"],
            **{f"valid_{key}": value for key, value in metrics.items() if key != "mae"},
            "units": self.task.units,
            "elapsed_s": round(state.elapsed_s, 2),
            "best": improved,
        }
        self.history.append(line)
        if self.on_validation is not None:
            self.on_validation(line)
        if self.context.is_main:
            if self.out_dir is not None:
                with open(self.out_dir / LOG_FILE, "a") as log:
                    log.write(json.dumps(line) + "\n")
            if improved:
                self.task.save_best(metrics)
        return metrics


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The torch seed of one optimizer step: a hash of (seed, global step, process rank)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def set_trainable(model: nn.Module, prefixes: Sequence[str]) -> None:
    """Train exactly the parameters whose names start with one of ``prefixes`` (``""``: all); freeze the rest.

    Turns "router only" (``["router", "energy_offsets"]``) and "all unfrozen" (``[""]``) into configs.
    """
    names = [name for name, _ in model.named_parameters()]
    unmatched = [prefix for prefix in prefixes if not any(name.startswith(prefix) for name in names)]
    if unmatched:
        raise AdaScaleError(f"trainable: no parameter name starts with {', '.join(map(repr, unmatched))}")
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(name.startswith(prefix) for prefix in prefixes))


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        disable=not enabled,
    )


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}")
    return out
