"""Training a branch on forces (and optionally energies), resumable, data-parallel, within a time budget.

One optimiser step takes ``batch_size`` frames (over all processes; each process takes
every world_size-th of them). The force loss is a weighted mean over atoms (weights per
species, default 1), normalised by the *global* weight sum and multiplied by the process count, so DDP's gradient average equals the gradient of the
same global batch in one process. The frame order of epoch e is a permutation seeded by
(seed, e), and the learning rate is a function of the step (and of the elapsed time when
a time budget ends the schedule), so a checkpoint holds all the state needed: resuming
after a kill reproduces the uninterrupted run exactly (without a time budget).

Outputs in the run directory:
``weights.pt`` + ``branch.json`` (the best model by validation force MAE, loadable with
:func:`adascale.models.io.load_branch`), ``config.yaml`` (the resolved config),
``log.jsonl`` (one line per validation), ``metrics.json`` (validation metrics of the
best model, training time), ``checkpoint.pt`` (the latest state, for ``--resume``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adascale.data.frames import Frame, check_cutoff
from adascale.data.regimes import subset_masks
from adascale.errors import AdaScaleError
from adascale.files import atomic_write_bytes, write_json
from adascale.models.io import build_branch, save_branch
from adascale.training.charges import fit_species_charges
from adascale.training.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from adascale.training.config import TrainConfig, config_to_yaml
from adascale.training.data import FrameDataset, fit_species_shifts, force_rms, training_species
from adascale.training.distributed import DistributedContext
from adascale.units import KJ_MOL_NM_PER_EV_A

LOG_FILE = "log.jsonl"
METRICS_FILE = "metrics.json"
CONFIG_YAML = "config.yaml"
SUBSETS = ("all", "ions", "close_contact")
# settings that may change when a run is resumed (they do not change the trajectory so far)
RESUMABLE_CHANGES = ("training.time_budget_minutes", "training.max_epochs", "training.patience")


@dataclass
class RunState:
    """Counters a checkpoint carries; ``epoch_sums`` are (loss, |dF| sum, force components) of the epoch so far."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    elapsed_s: float = 0.0
    best_mae: float = math.inf
    best_epoch: int = 0
    bad_validations: int = 0
    log_lines: int = 0
    epoch_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])


@dataclass
class TrainResult:
    """How a run ended; MAEs in kJ/mol/nm."""

    best_valid_mae: float
    best_epoch: int
    epochs: int
    steps: int
    elapsed_s: float
    stopped: str


class Trainer:
    """Trains one branch; see the module docstring. Build it, optionally :meth:`resume`, then :meth:`run`."""

    def __init__(
        self,
        config: TrainConfig,
        train_frames: Sequence[Frame],
        valid_frames: Sequence[Frame],
        out_dir: str | Path,
        *,
        context: DistributedContext | None = None,
        show_progress: bool = True,
    ) -> None:
        self.config = config
        self.settings = config.training
        self.out_dir = Path(out_dir)
        self.context = context or DistributedContext()
        self.show_progress = show_progress and self.context.is_main
        self.dtype = torch.float64 if self.settings.dtype == "float64" else torch.float32
        cutoff = config.model.cutoff
        _check_frames(train_frames, valid_frames, cutoff, self.settings.energy_weight > 0)
        self.species = training_species(train_frames)
        self.train_set = FrameDataset(train_frames, cutoff, self.dtype, self.settings.species_force_weights)
        self.valid_set = FrameDataset(valid_frames, cutoff, self.dtype)
        self.valid_masks = [subset_masks(f.numbers, d) for f, d in zip(valid_frames, self.valid_set.nearest_ion_nm())]
        if self.settings.batch_size % self.context.world_size:
            raise AdaScaleError(
                f"batch_size {self.settings.batch_size} must be a multiple of the {self.context.world_size} processes"
            )
        self.steps_per_epoch = len(self.train_set) // self.settings.batch_size
        if self.steps_per_epoch == 0:
            raise AdaScaleError(f"batch_size {self.settings.batch_size} exceeds the {len(self.train_set)} training frames")

        self.model = self._build_model(train_frames)
        self.parallel_model = self.context.wrap(self.model)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.settings.learning_rate, weight_decay=self.settings.weight_decay
        )
        self.state = RunState()
        self.last_validation_s = 0.0

    def _build_model(self, train_frames: Sequence[Frame]):
        """The seeded branch with statistics fitted on the training frames (and starting charges)."""
        torch.manual_seed(self.settings.seed)
        kwargs = self.config.model.branch_kwargs() | {
            "species": self.species,
            "average_neighbours": self.train_set.average_neighbours(),
        }
        model = build_branch(kwargs).to(device=self.context.device, dtype=self.dtype)
        self.statistics = {
            "energy_shift_eV": fit_species_shifts(train_frames, self.species).tolist(),
            "force_rms_eV_A": force_rms(train_frames),
            "average_neighbours": kwargs["average_neighbours"],
        }
        model.set_energy_statistics(self.statistics["energy_shift_eV"], self.statistics["force_rms_eV_A"])
        electrostatics = self.config.model.electrostatics
        if electrostatics is not None and electrostatics.charge_fit_bonded_below is not None:
            charges = fit_species_charges(
                train_frames, self.species, model.electrostatics, bonded_below=electrostatics.charge_fit_bonded_below
            )
            self.statistics["initial_species_charges_e"] = charges.tolist()
            with torch.no_grad():
                model.species_charge.copy_(torch.as_tensor(charges))
        return model

    # ----------------------------------------------------------------- checkpoints
    def resume(self) -> None:
        """Continue from ``checkpoint.pt`` in the run directory (same config except RESUMABLE_CHANGES)."""
        checkpoint = load_checkpoint(self.out_dir / CHECKPOINT_FILE)
        changed = [
            key for key in _differences(checkpoint["config"], self.config.model_dump(mode="json")) if key not in RESUMABLE_CHANGES
        ]
        if changed:
            raise AdaScaleError(
                f"{self.out_dir}: cannot resume with different settings ({', '.join(changed)}); "
                f"only {', '.join(RESUMABLE_CHANGES)} may change"
            )
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.state = RunState(**checkpoint["progress"])
        if not self.context.is_main:  # rank 0 carries the epoch's running sums
            self.state.epoch_sums = [0.0, 0.0, 0.0]
        if self.context.is_main:
            _truncate_log(self.out_dir / LOG_FILE, self.state.log_lines)

    def save_checkpoint(self) -> None:
        sums = self.context.sum(torch.tensor(self.state.epoch_sums, dtype=torch.float64)).tolist()
        if self.context.is_main:
            progress = asdict(self.state) | {"epoch_sums": sums}
            save_checkpoint(
                self.out_dir / CHECKPOINT_FILE,
                {
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "progress": progress,
                    "config": self.config.model_dump(mode="json"),
                },
            )

    # ----------------------------------------------------------------- training
    def learning_rate(self, elapsed_s: float) -> float:
        """Linear warm-up, then cosine decay over max_epochs (or the time budget, if that ends first)."""
        s = self.settings
        warmup = min(1.0, (self.state.global_step + 1) / (s.warmup_steps + 1))
        if s.schedule == "constant":
            return s.learning_rate * warmup
        progress = self.state.global_step / (s.max_epochs * self.steps_per_epoch)
        if s.time_budget_minutes is not None:
            progress = max(progress, elapsed_s / (60.0 * s.time_budget_minutes))
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return s.learning_rate * warmup * (s.final_learning_rate_factor + (1.0 - s.final_learning_rate_factor) * cosine)

    def step(self, indices: np.ndarray, elapsed_s: float) -> float:
        """One optimiser step on the global batch ``indices``; returns this process's share of the loss."""
        s, world = self.settings, self.context.world_size
        local = indices[self.context.rank :: world]
        total_weight = float(self.train_set.weight_sums()[indices].sum())
        data = self.train_set.batch(local)
        out = self.parallel_model(data.atoms.to(self.context.device))
        reference = data.forces.to(self.context.device)
        error = out["forces"] - reference
        if s.force_loss == "mse":
            per_component = error**2
        elif s.force_loss == "l1":
            per_component = error.abs()
        else:
            per_component = torch.nn.functional.huber_loss(out["forces"], reference, reduction="none", delta=s.huber_delta)
        loss = (per_component.sum(dim=1) * data.weights.to(error)).sum() / (3 * total_weight)
        if s.energy_weight > 0:
            per_atom = (out["energy"] - data.energy.to(self.context.device)) / data.atoms.atoms_per_frame().to(out["energy"])
            loss = loss + s.energy_weight * (per_atom**2).sum() / len(indices)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(elapsed_s)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * world).backward()  # DDP averages over processes: the gradient of the global batch
        if s.gradient_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.gradient_clip)
        self.optimizer.step()
        sums = self.state.epoch_sums
        sums[0] += float(loss.detach())
        sums[1] += float(error.detach().abs().sum())
        sums[2] += error.numel()
        return float(loss.detach())

    @torch.no_grad()
    def validate(self) -> dict:
        """Validation force MAE per subset (kJ/mol/nm) and energy MAE per atom (eV), over all processes."""
        self.model.eval()
        sums = torch.zeros(2 * len(SUBSETS) + 2, dtype=torch.float64)
        for k in range(self.context.rank, len(self.valid_set), self.context.world_size):
            data = self.valid_set.batch([k])
            out = self.model(data.atoms.to(self.context.device))
            per_atom = (out["forces"].cpu() - data.forces).abs().mean(dim=1).double().numpy()
            for m, subset in enumerate(SUBSETS):
                mask = self.valid_masks[k][subset]
                sums[2 * m] += float(per_atom[mask].sum())
                sums[2 * m + 1] += float(mask.sum())
            if not torch.isnan(data.energy).any():
                sums[-2] += float((out["energy"].cpu() - data.energy).abs().sum()) / len(data.forces)
                sums[-1] += 1
        sums = self.context.sum(sums.to(self.context.device)).cpu()
        self.model.train()
        metrics = {
            subset: (float(sums[2 * m] / sums[2 * m + 1]) * KJ_MOL_NM_PER_EV_A if sums[2 * m + 1] > 0 else None)
            for m, subset in enumerate(SUBSETS)
        }
        counts = {subset: int(sums[2 * m + 1]) for m, subset in enumerate(SUBSETS)}
        energy = float(sums[-2] / sums[-1]) if sums[-1] > 0 else None
        return {"force_mae": metrics, "counts": counts, "energy_mae_per_atom_eV": energy}

    def run(self) -> TrainResult:
        """Train until max_epochs, early stopping or the time budget; returns how it ended."""
        s, state = self.settings, self.state
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.context.is_main:
            atomic_write_bytes(self.out_dir / CONFIG_YAML, lambda f: f.write(config_to_yaml(self.config).encode()))
        budget_s = None if s.time_budget_minutes is None else 60.0 * s.time_budget_minutes
        start = time.monotonic() - state.elapsed_s
        stopped = "max_epochs"
        self.model.train()
        with _progress_bar(self.show_progress) as bar:
            task = bar.add_task("", total=self.steps_per_epoch, status="")
            while state.epoch < s.max_epochs:
                order = np.random.default_rng([s.seed, state.epoch]).permutation(len(self.train_set))
                bar.update(task, completed=state.step_in_epoch, description=f"epoch {state.epoch + 1}")
                steps_this_session = 0
                for k in range(state.step_in_epoch, self.steps_per_epoch):
                    elapsed = time.monotonic() - start
                    out_of_time = budget_s is not None and elapsed + self.last_validation_s > budget_s
                    if self.context.broadcast_flag(out_of_time):
                        stopped = "time_budget"
                        break
                    loss = self.step(order[k * s.batch_size : (k + 1) * s.batch_size], elapsed)
                    state.step_in_epoch, state.global_step = k + 1, state.global_step + 1
                    steps_this_session += 1
                    if state.global_step % s.checkpoint_every_steps == 0:
                        state.elapsed_s = time.monotonic() - start
                        self.save_checkpoint()
                    bar.update(task, advance=1, status=f"loss {loss * self.context.world_size:.4g}")
                if stopped == "time_budget" and steps_this_session == 0 and state.step_in_epoch == 0:
                    break  # nothing new to validate
                finished_epoch = state.step_in_epoch == self.steps_per_epoch
                validation_start = time.monotonic()
                metrics = self.validate()
                self.last_validation_s = time.monotonic() - validation_start
                state.elapsed_s = time.monotonic() - start
                self._record(metrics, partial=not finished_epoch)
                bar.update(task, status=f"valid MAE {metrics['force_mae']['all']:.1f} kJ/mol/nm")
                if finished_epoch:
                    state.epoch, state.step_in_epoch, state.epoch_sums = state.epoch + 1, 0, [0.0, 0.0, 0.0]
                self.save_checkpoint()
                if stopped == "time_budget":
                    break
                if state.bad_validations >= s.patience:
                    stopped = "early_stopping"
                    break
        state.elapsed_s = time.monotonic() - start
        result = TrainResult(
            best_valid_mae=state.best_mae,
            best_epoch=state.best_epoch,
            epochs=state.epoch,
            steps=state.global_step,
            elapsed_s=state.elapsed_s,
            stopped=stopped,
        )
        if self.context.is_main:
            self._update_metrics({"training": asdict(result)})
        return result

    # ----------------------------------------------------------------- outputs
    def _record(self, metrics: dict, *, partial: bool) -> None:
        """Track the best model, then append the epoch's line to the log (main process writes)."""
        state = self.state
        sums = self.context.sum(torch.tensor(state.epoch_sums, dtype=torch.float64)).tolist()
        steps = state.step_in_epoch or self.steps_per_epoch
        mae = metrics["force_mae"]["all"]
        improved = mae < state.best_mae
        if improved:
            state.best_mae, state.best_epoch, state.bad_validations = mae, state.epoch + 1, 0
        else:
            state.bad_validations += 1
        state.log_lines += 1
        if not self.context.is_main:
            return
        line = {
            "epoch": state.epoch + 1,
            "partial": partial,
            "step": state.global_step,
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            "train_loss": sums[0] / max(steps, 1),
            "train_force_mae": sums[1] / max(sums[2], 1) * KJ_MOL_NM_PER_EV_A,
            "valid_force_mae": metrics["force_mae"],
            "valid_energy_mae_per_atom_eV": metrics["energy_mae_per_atom_eV"],
            "units": "kJ/mol/nm",
            "elapsed_s": round(state.elapsed_s, 2),
            "best": improved,
        }
        with open(self.out_dir / LOG_FILE, "a") as log:
            log.write(json.dumps(line) + "\n")
        if improved:
            save_branch(
                self.out_dir,
                self.model,
                {"training_config": self.config.model_dump(mode="json"), "statistics": self.statistics},
            )
            self._update_metrics({"units": "kJ/mol/nm", "best_epoch": state.best_epoch, "valid": metrics})

    def _update_metrics(self, values: dict) -> None:
        path = self.out_dir / METRICS_FILE
        current = json.loads(path.read_text()) if path.is_file() else {}
        write_json(path, current | values)


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        disable=not enabled,
    )


def _check_frames(train: Sequence[Frame], valid: Sequence[Frame], cutoff: float, need_energy: bool) -> None:
    """Clear errors before any training: empty sets, cells too small, unknown species, missing energies."""
    if not train or not valid:
        raise AdaScaleError("need at least one training frame and one validation frame")
    for name, frames in (("training", train), ("validation", valid)):
        for index, frame in enumerate(frames):
            check_cutoff(frame, cutoff, path=f"{name} set", index=index)
            if frame.forces is None:
                raise AdaScaleError(f"{name} set: frame {index}: field 'forces': missing reference forces")
            if need_energy and frame.energy is None:
                raise AdaScaleError(f"{name} set: frame {index}: field 'energy': energy_weight > 0 needs reference energies")
    unknown = set(training_species(valid)) - set(training_species(train))
    if unknown:
        raise AdaScaleError(f"validation set: species {sorted(unknown)} never occur in the training set")


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    keys = sorted(set(a) | set(b))
    out = []
    for key in keys:
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}")
    return out


def _truncate_log(path: Path, keep_lines: int) -> None:
    """Drop log lines written after the checkpoint being resumed (it counted ``keep_lines``)."""
    if not path.is_file():
        return
    kept = path.read_text().splitlines(keepends=True)[:keep_lines]
    atomic_write_bytes(path, lambda f: f.write("".join(kept).encode()))
