"""``adascale train``: one branch trained on labelled frames by the one loop, resumable, data-parallel.

The :class:`Trainer` builds the branch from a :class:`TrainConfig` (seeded, with energy
statistics and starting charges fitted on the training frames) on the context's device (the
CPU by default; a GPU in float32 only: ``context=DistributedContext(device=torch.device("cuda"))``
or :func:`~adascale.training.distributed.setup_distributed`), hands it to a
:class:`~adascale.training.tasks.FrameTask` and runs :class:`~adascale.training.loop.TrainingLoop`
(budgets, schedule, early stopping, best epoch, checkpoints, DDP: see there).

Outputs in the run directory:
``model.json`` + ``weights.pt`` (the best model by validation force MAE, loadable with
:func:`adascale.models.io.load_model`), ``config.yaml`` (the resolved config),
``log.jsonl`` (one line per validation), ``metrics.json`` (validation metrics of the
best model, how training ended), ``checkpoint.pt`` (the latest state, for ``--resume``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from adascale.data.frames import Frame, check_cutoff
from adascale.errors import AdaScaleError
from adascale.files import atomic_write_bytes, write_json
from adascale.models.io import build_model, save_model
from adascale.runtime import check_precision
from adascale.training.charges import fit_species_charges
from adascale.training.config import TrainConfig, config_to_yaml
from adascale.training.data import FrameDataset, fit_species_shifts, force_rms, training_species
from adascale.training.distributed import DistributedContext
from adascale.training.loop import TrainingLoop, TrainResult
from adascale.training.tasks import FrameLoss, FrameTask

METRICS_FILE = "metrics.json"
CONFIG_YAML = "config.yaml"
# settings that may change when a run is resumed (they do not change the trajectory so far)
RESUMABLE_CHANGES = ("training.time_budget_minutes", "training.max_epochs", "training.max_steps", "training.patience")


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
        self.settings = s = config.training
        self.out_dir = Path(out_dir)
        self.context = context or DistributedContext()
        self.dtype = torch.float64 if s.dtype == "float64" else torch.float32
        check_precision(self.context.device, self.dtype)
        _check_frames(train_frames, valid_frames, config.model.cutoff, s.energy_weight > 0)
        self.species = training_species(train_frames)
        train_set = FrameDataset(train_frames, config.model.cutoff, self.dtype, s.species_force_weights)
        self.model = self._build_model(train_frames, train_set)
        loss = FrameLoss(s.force_loss, s.huber_delta, s.energy_weight, s.species_force_weights, s.stress_weight)
        self.task = FrameTask(self.model, train_set, valid_frames, loss, context=self.context, save_best=self._save_best)
        self.loop = TrainingLoop(
            self.task,
            s,
            self.out_dir,
            context=self.context,
            config=config.model_dump(mode="json"),
            resumable=RESUMABLE_CHANGES,
            show_progress=show_progress,
        )

    def _build_model(self, train_frames: Sequence[Frame], train_set: FrameDataset):
        """The seeded branch with statistics fitted on the training frames (starting charges, repulsion onsets)."""
        torch.manual_seed(self.settings.seed)
        average_neighbours = train_set.average_neighbours()
        kwargs = self.config.model.branch_kwargs() | {"species": self.species, "average_neighbours": average_neighbours}
        repulsion = self.config.model.repulsion
        if repulsion is not None:
            pairs = [[a, b, r - repulsion.margin] for a, b, r in train_set.closest_distances() if r > repulsion.margin]
            kwargs["repulsion"] = {"pairs": pairs, "energy": repulsion.energy, "width": repulsion.width}
        model = build_model(kwargs).to(device=self.context.device, dtype=self.dtype)
        self.statistics = {
            "energy_shift_eV": fit_species_shifts(train_frames, self.species).tolist(),
            "force_rms_eV_A": force_rms(train_frames),
            "average_neighbours": average_neighbours,
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

    def resume(self) -> None:
        """Continue from ``checkpoint.pt`` in the run directory (same config except RESUMABLE_CHANGES)."""
        self.loop.resume()

    def validate(self) -> dict:
        """Validation metrics of the current weights (see :meth:`FrameTask.validate`)."""
        self.model.eval()
        metrics = self.task.validate()
        self.model.train()
        return metrics

    def run(self) -> TrainResult:
        """Train until a budget, early stopping or the wall-clock bound; returns how it ended."""
        if self.context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.out_dir / CONFIG_YAML, lambda f: f.write(config_to_yaml(self.config).encode()))
            self._update_metrics({"stress_training": self.stress_summary()})
        result = self.loop.run()
        if self.context.is_main:
            self._update_metrics({"training": result.summary()})
        return result

    def stress_summary(self) -> dict:
        """How many training frames the stress loss sees (frames with a label in a 3D-periodic cell), and what the rest get."""
        train_set = self.task.train_set
        with_stress = int(train_set.has_stress.sum())
        note = "no stress term (stress_weight 0)"
        if self.settings.stress_weight > 0:
            note = (
                "all frames train on stress"
                if with_stress == len(train_set)
                else "frames without stress train on forces and energy only"
            )
        return {
            "stress_weight": self.settings.stress_weight,
            "frames": len(train_set),
            "frames_with_stress": with_stress,
            "note": note,
        }

    def _save_best(self, metrics: dict) -> None:
        metadata = {"training_config": self.config.model_dump(mode="json"), "statistics": self.statistics}
        save_model(self.out_dir, self.model, metadata)
        valid = {
            "force_mae": metrics["mae"],
            "counts": metrics["counts"],
            "energy_mae_per_atom_eV": metrics["energy_mae_per_atom_eV"],
        }
        self._update_metrics({"units": self.task.units, "best_epoch": self.loop.state.best_epoch, "valid": valid})

    def _update_metrics(self, values: dict) -> None:
        path = self.out_dir / METRICS_FILE
        current = json.loads(path.read_text()) if path.is_file() else {}
        write_json(path, current | values)


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
