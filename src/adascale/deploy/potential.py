"""One deployed model as a potential: arrays in, energy / forces / stress out, for every MD engine.

The ASE calculator and the OpenMM ``PythonForce`` both call :meth:`Potential.compute`, so both
see the same numbers. Energy (eV), forces (eV/Å) and, for fully periodic cells, stress
(eV/Å³, ASE's sign) come from one autograd pass over E(R, ε): positions and cell are deformed
by a symmetric strain ε, R' = R (1 + ε), cell' = cell (1 + ε), and

    F = −∂E/∂R,    σ = (1/V) ∂E/∂ε   at ε = 0

(exact for energies that depend on the cell only through the edge vectors and the Ewald/PME
sums, as adascale's models do).

Speed: the neighbour list is a :class:`~adascale.deploy.verlet.VerletList` (rebuilt only when
an atom moved more than half the skin), built once at the model's largest cutoff and shared
by everything inside the model (a mixture's router features and branches filter it with
``within``; their default router radii stay within the largest branch cutoff, so that list is
the branches' own). The model runs in ``dtype`` (float32 by default) on ``device`` (the CPU
by default, or a CUDA GPU, float32 only): positions come in as CPU numpy arrays, the neighbour
list is built on the CPU, the batch moves to the device and the results come back as numpy
arrays; energies are summed in float64. A Potential changes no process-wide setting: MD scripts call
:func:`adascale.runtime.keep_freed_memory` once at their start, as ``adascale md`` does.

Two modes for a mixture:

* ``"conservative"`` (default): forces of the mixture's total energy. Use it for MD.
* ``"force_mixing"``: per-atom mixing of the branches' forces with the router's weights,
  F_i = Σ_k w_ik F_ik, as the paper routes. Not the gradient of any energy (the reported
  energy is the mixture's), so MD with it drifts and it has no stress; single points only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from adascale.data.frames import Frame, check_cutoff
from adascale.deploy.verlet import VerletList
from adascale.errors import AdaScaleError
from adascale.models.base import Branch
from adascale.models.batch import AtomsBatch
from adascale.models.io import copy_model
from adascale.runtime import check_precision, resolve_device

MODES = ("conservative", "force_mixing")
DTYPES = ("float32", "float64")
DEFAULT_SKIN = 1.0  # Å: at 300 K a water moves ~0.5 Å in ~0.1 ps, so a rebuild every ~50-100 steps


@dataclass
class Evaluation:
    """One configuration's results: energy eV, per-atom energies (n,) eV, forces (n, 3) eV/Å,
    stress (3, 3) eV/Å³ or None."""

    energy: float
    energies: np.ndarray
    forces: np.ndarray
    stress: np.ndarray | None


class Potential:
    """A Branch (any kind: branch, mixture, scale-conditioned) evaluated on configurations.

    dtype: "float32" (default) or "float64"; skin: Verlet skin in Å (0: a fresh list each call);
    mode: "conservative" or "force_mixing" (mixtures only); device: "cpu" (default), "cuda",
    "cuda:N" or a torch.device (float32 only on a GPU).
    """

    def __init__(
        self,
        model: Branch,
        *,
        dtype: str = "float32",
        skin: float = DEFAULT_SKIN,
        mode: str = "conservative",
        device: str | torch.device = "cpu",
    ):
        if mode not in MODES:
            raise AdaScaleError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if dtype not in DTYPES:
            raise AdaScaleError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if mode == "force_mixing" and not hasattr(model, "components"):
            raise AdaScaleError("force_mixing needs a mixture model; a single branch is always conservative")
        self.dtype = getattr(torch, dtype)
        self.device = resolve_device(device)
        check_precision(self.device, self.dtype)
        self.model = copy_model(model).to(device=self.device, dtype=self.dtype).eval()  # the caller's model stays as it is
        self.mode = mode
        self.neighbours = VerletList(self.model.cutoff, skin)
        self.species = set(self.model.species)

    @property
    def has_stress(self) -> bool:
        return self.mode == "conservative"

    def compute(self, numbers, positions, cell, pbc, *, stress: bool = False) -> Evaluation:
        """Results for atomic numbers (n,), positions (n, 3) Å, cell (3, 3) Å (rows), pbc (3,).

        ``stress`` asks for the stress (only for 3D-periodic cells in conservative mode; the
        caller checks). Unknown species and cells too small for the cutoff raise AdaScaleError.
        """
        pbc = np.asarray(pbc, dtype=bool)
        frame = Frame(
            np.asarray(numbers, dtype=np.int64), np.asarray(positions, dtype=np.float64), np.asarray(cell), pbc, None, None
        )
        unknown = set(np.unique(frame.numbers).tolist()) - self.species
        if unknown:
            raise AdaScaleError(
                f"atomic number(s) {sorted(unknown)} unknown to this model (trained on species {sorted(self.species)})"
            )
        check_cutoff(frame, self.model.cutoff)
        pairs = self.neighbours.pairs(frame)
        batch = AtomsBatch.from_frame(frame, self.neighbours.list_cutoff, dtype=self.dtype, device=self.device, neighbours=pairs)
        if self.mode == "force_mixing":
            batch = batch.within(self.model.cutoff)
            atom_energy, forces = self._force_mixing(batch, batch.positions.requires_grad_(True))
            virial = None
        else:  # the model's own forward (it cuts the list to its cutoff); a cell that requires grad asks for the virial
            if stress:
                batch = batch.with_positions(batch.positions, batch.cell.requires_grad_(True))
            out = self.model(batch)
            atom_energy, forces, virial = out["atom_energy"], out["forces"], out["virial"][0] if stress else None
        energies = atom_energy.detach().double().cpu().numpy()
        sigma = None
        if virial is not None:
            sigma = virial.double().cpu().numpy() / abs(float(np.linalg.det(frame.cell)))
        return Evaluation(float(energies.sum()), energies, forces.detach().double().cpu().numpy(), sigma)

    def _force_mixing(self, batch, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixture energies and per-atom mixed branch forces Σ_k w_ik F_ik (n, 3)."""
        energies, inputs = self.model.components(batch)
        mixed, weights = self.model.mix(energies, inputs, batch.numbers)
        branch_forces = [-torch.autograd.grad(e, positions, retain_graph=True)[0] for e in energies.sum(dim=0)]
        return mixed.detach(), torch.einsum("nk,knc->nc", weights.detach(), torch.stack(branch_forces))
