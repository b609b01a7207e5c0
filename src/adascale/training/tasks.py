"""The two kinds of training task the one loop (:mod:`adascale.training.loop`) runs.

* :class:`FrameTask`: any model that maps an AtomsBatch to ``energy``/``forces`` (PaiNN,
  LongRangePaiNN, AdaptiveMixture, the scale-conditioned branch). An item is a frame; a step
  takes ``batch_size`` frames (over all processes; each process every world_size-th). The
  force loss is a weighted mean over atoms (weights per species, default 1) normalised by the
  *global* weight sum and multiplied by the process count, so DDP's gradient average equals
  the gradient of the same global batch in one process. If the model defines
  ``auxiliary_loss(outputs, batch) -> Tensor`` (outputs: what its forward returned, keys
  energy, forces, atom_energy, features; batch: the AtomsBatch it read), that term is added;
  the model owns its weight. Validation: force MAE (kJ/mol/nm) per subset all / ions /
  close_contact and the energy MAE per atom (eV), reduced over processes.
  With ``stress_weight`` > 0, frames with a stress label (3D-periodic) also add the stress loss:
  the batch's cell requires grad, so the model returns its virial dE/dε from the same backward
  pass as its forces (create_graph, so its error trains the parameters), and the loss is the MSE
  over the 9 components of (σ_model - σ_ref) V/N, the virial per atom in eV, averaged over the
  labelled frames of the global batch: the same units as the per-atom energy MSE. Frames without a
  stress label train on forces (and energy) only; stress_weight 0 asks for no virial.
* :class:`ArrayTask`: a module on rows of a fixed feature matrix (routers on PredictionSet
  arrays); the caller gives the objective and the validation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from adascale.data.frames import Frame
from adascale.data.regimes import SUBSETS, subset_masks
from adascale.training.data import FrameDataset, LabelledBatch
from adascale.training.distributed import DistributedContext
from adascale.units import KJ_MOL_NM_PER_EV_A


@dataclass
class FrameLoss:
    """The loss of a frame batch: a per-component force loss plus an optional per-atom energy MSE."""

    force_loss: str = "mse"  # "mse", "l1" or "huber"
    huber_delta: float = 0.1  # eV/Å
    energy_weight: float = 0.0  # weight of the per-atom energy MSE (eV^2)
    species_force_weights: dict[int, float] = field(default_factory=dict)
    stress_weight: float = 0.0  # weight of the MSE of the virial per atom, stress x volume / atoms (eV^2)


class FrameTask:
    """Train ``model`` (on its device, in its dtype) on labelled frames; see the module docstring.

    train_frames: frames, or a FrameDataset already built at the model's cutoff and dtype.
    save_best: called with the validation metrics whenever they improve (main process).
    """

    stat_names = ("loss", "abs_force_error", "force_components")
    units = "kJ/mol/nm"

    def __init__(
        self,
        model: nn.Module,
        train_frames: Sequence[Frame] | FrameDataset,
        valid_frames: Sequence[Frame],
        loss: FrameLoss = FrameLoss(),
        *,
        context: DistributedContext | None = None,
        save_best: Callable[[dict], None] | None = None,
    ) -> None:
        self.model = model
        self.settings = loss
        self.context = context or DistributedContext()
        self.dtype = next(model.parameters()).dtype
        self.train_set = (
            train_frames
            if isinstance(train_frames, FrameDataset)  # built by the caller at the model's cutoff (neighbour lists reused)
            else FrameDataset(train_frames, model.cutoff, self.dtype, loss.species_force_weights)
        )
        self.valid_set = FrameDataset(valid_frames, model.cutoff, self.dtype)
        self.valid_masks = [subset_masks(f.numbers, d) for f, d in zip(valid_frames, self.valid_set.nearest_ion_nm())]
        self._save_best = save_best
        self._parallel: nn.Module | None = None

    def __len__(self) -> int:
        return len(self.train_set)

    @property
    def parallel_model(self) -> nn.Module:
        """The model under DDP (several processes), wrapped at the first step: after the loop froze
        parameters and loaded any checkpoint."""
        if self._parallel is None:
            self._parallel = self.context.wrap(self.model)
        return self._parallel

    def loss(self, items: np.ndarray) -> tuple[Tensor, Tensor]:
        s, world = self.settings, self.context.world_size
        local = items[self.context.rank :: world]
        total_weight = float(self.train_set.weight_sums()[items].sum())
        data = self.train_set.batch(local)
        atoms = data.atoms.to(self.context.device)
        stressed = s.stress_weight > 0 and bool(self.train_set.has_stress[local].any())
        if stressed:  # a cell that requires grad asks the model for its virial (the same backward pass as the forces)
            atoms = atoms.with_positions(atoms.positions, atoms.cell.detach().requires_grad_(True))
        out = self.parallel_model(atoms)
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
            loss = loss + s.energy_weight * (per_atom**2).sum() / len(items)
        if stressed:
            loss = loss + s.stress_weight * self._stress_loss(out["virial"], data, items)
        objective = loss * world  # DDP averages over processes: the gradient of the global batch
        auxiliary = getattr(self.model, "auxiliary_loss", None)
        if auxiliary is not None:
            extra = auxiliary(out, atoms)
            objective = objective + extra
            loss = loss + extra / world
        stats = torch.tensor([float(loss.detach()), float(error.detach().abs().sum()), float(error.numel())], dtype=torch.float64)
        return objective, stats

    def _stress_loss(self, virial: Tensor, data: LabelledBatch, items: np.ndarray) -> Tensor:
        """Sum over this process's labelled frames of the mean squared virial-per-atom error (eV^2), over the
        global count; ``virial`` (B, 3, 3) eV = dE/dε from the model."""
        volume = torch.linalg.det(data.atoms.cell.to(virial)).abs()
        reference = data.stress.to(virial) * volume[:, None, None]
        labelled = ~torch.isnan(reference).any(dim=2).any(dim=1)
        per_atom = (virial - reference)[labelled] / data.atoms.atoms_per_frame().to(virial)[labelled, None, None]
        return (per_atom**2).mean(dim=(1, 2)).sum() / max(int(self.train_set.has_stress[items].sum()), 1)

    @torch.no_grad()
    def validate(self) -> dict:
        """Force MAE per subset (kJ/mol/nm), atom counts, energy MAE per atom (eV), over all processes."""
        sums = torch.zeros(2 * len(SUBSETS) + 2, dtype=torch.float64)
        for k in range(self.context.rank, len(self.valid_set), self.context.world_size):
            data = self.valid_set.batch([k])
            out = self.model(data.atoms.to(self.context.device))
            per_atom = (out["forces"].detach().cpu() - data.forces).abs().mean(dim=1).double().numpy()
            for m, subset in enumerate(SUBSETS):
                mask = self.valid_masks[k][subset]
                sums[2 * m] += float(per_atom[mask].sum())
                sums[2 * m + 1] += float(mask.sum())
            if not torch.isnan(data.energy).any():
                sums[-2] += float((out["energy"].detach().cpu() - data.energy).abs().sum()) / len(data.forces)
                sums[-1] += 1
        sums = self.context.sum(sums.to(self.context.device)).cpu()
        mae = {
            subset: (float(sums[2 * m] / sums[2 * m + 1]) * KJ_MOL_NM_PER_EV_A if sums[2 * m + 1] > 0 else None)
            for m, subset in enumerate(SUBSETS)
        }
        counts = {subset: int(sums[2 * m + 1]) for m, subset in enumerate(SUBSETS)}
        energy = float(sums[-2] / sums[-1]) if sums[-1] > 0 else None
        return {"mae": mae, "counts": counts, "energy_mae_per_atom_eV": energy}

    def train_summary(self, sums: list[float], steps: int) -> dict:
        return {"train_loss": sums[0] / max(steps, 1), "train_force_mae": sums[1] / max(sums[2], 1) * KJ_MOL_NM_PER_EV_A}

    def save_best(self, metrics: dict) -> None:
        if self._save_best is not None:
            self._save_best(metrics)


class ArrayTask:
    """Train ``model`` on rows of ``x`` (N, F): ``objective(model(x[rows]), rows)`` is the loss,
    ``validate()`` returns ``{"mae": {subset: value}}`` in ``units``."""

    stat_names = ("objective",)

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        objective: Callable[[Tensor, Tensor], Tensor],
        validate: Callable[[], dict],
        *,
        units: str = "eV/Å",
    ) -> None:
        self.model, self.x, self.objective, self._validate, self.units = model, x, objective, validate, units

    def __len__(self) -> int:
        return len(self.x)

    def loss(self, items: np.ndarray) -> tuple[Tensor, Tensor]:
        rows = torch.as_tensor(items, dtype=torch.long)
        loss = self.objective(self.model(self.x[rows]), rows)
        return loss, loss.detach().double().reshape(1)

    @torch.no_grad()
    def validate(self) -> dict:
        return self._validate()

    def train_summary(self, sums: list[float], steps: int) -> dict:
        return {"train_objective": sums[0] / max(steps, 1)}

    def save_best(self, metrics: dict) -> None:
        """Nothing to write: the loop keeps the best weights in memory (and in its checkpoint)."""
