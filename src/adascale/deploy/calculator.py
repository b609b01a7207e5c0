"""``AdaScaleCalculator``: an ASE calculator for one branch or an adaptive mixture.

Energy (eV), forces (eV/Å) and, for fully periodic cells, stress (eV/Å³, ASE's sign and
Voigt order) all come from one autograd pass over E(R, ε): positions and cell are deformed
by a symmetric strain ε, R' = R (1 + ε), cell' = cell (1 + ε), and

    F = −∂E/∂R,    σ = (1/V) ∂E/∂ε   at ε = 0

(the strain derivative is exact for energies that depend on the cell only through the
edge vectors and the Ewald/PME sums, as adascale's branches do).

Two deployment modes for a mixture (``mode``):

* ``"conservative"`` (default): forces of the mixture's total energy. Use it for MD.
* ``"force_mixing"``: per-atom mixing of the branches' forces with the router's weights,
  F_i = Σ_k w_ik F_ik, as the paper routes. Not the gradient of any energy (the reported
  energy is the mixture's), so MD with it drifts; use it for single-point forces only.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from adascale.errors import AdaScaleError

MODES = ("conservative", "force_mixing")


def load_model(path: str | Path):
    """A branch directory (``adascale train``) or a mixture directory (``adascale mixture``), in eval mode."""
    from adascale.models.base import Branch
    from adascale.models.io import load_model as load_saved_model

    return load_saved_model(path, expect=Branch)


class AdaScaleCalculator(Calculator):
    """ASE calculator over an adascale branch or mixture.

    model: a model directory or an already built module (a Branch or AdaptiveMixture).
    dtype: "float64" (default: MD energy conservation) or "float32" (about twice as fast).
    mode: "conservative" or "force_mixing" (mixtures only; see the module docstring).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model, *, dtype: str = "float64", mode: str = "conservative", **kwargs) -> None:
        super().__init__(**kwargs)
        from adascale.models.mixture import AdaptiveMixture

        if mode not in MODES:
            raise AdaScaleError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.dtype = getattr(torch, dtype)
        self.model = (load_model(model) if isinstance(model, (str, Path)) else model).to(self.dtype).eval()
        if mode == "force_mixing" and not isinstance(self.model, AdaptiveMixture):
            raise AdaScaleError("force_mixing needs a mixture model; a single branch is always conservative")
        self.mode = mode

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        from adascale.data.frames import Frame, check_cutoff
        from adascale.models.batch import AtomsBatch

        super().calculate(atoms, properties, system_changes)
        pbc = np.asarray(self.atoms.pbc, dtype=bool)
        frame = Frame(
            numbers=self.atoms.numbers.astype(np.int64),
            positions=self.atoms.get_positions(wrap=bool(pbc.any())),
            cell=np.asarray(self.atoms.cell),
            pbc=pbc,
            forces=None,
            energy=None,
        )
        check_cutoff(frame, self.model.cutoff)
        batch = AtomsBatch.from_frame(frame, self.model.cutoff, dtype=self.dtype)
        positions = batch.positions.requires_grad_(True)
        strain = torch.zeros(3, 3, dtype=self.dtype, requires_grad=True)
        deform = torch.eye(3, dtype=self.dtype) + 0.5 * (strain + strain.T)
        strained = replace(batch, positions=positions @ deform, cell=batch.cell @ deform)

        if self.mode == "force_mixing":
            atom_energy, forces = self._force_mixing(strained, positions)
            gradient = None
        else:
            atom_energy, _ = self.model.atom_energies(strained)
            energy = atom_energy.sum()
            wants_stress = "stress" in properties and bool(pbc.all())
            inputs = [positions, strain] if wants_stress else [positions]
            gradient = torch.autograd.grad(energy, inputs)
            forces = -gradient[0]
        energy = float(atom_energy.detach().sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": atom_energy.detach().double().numpy(),
            "forces": forces.detach().double().numpy(),
        }
        if gradient is not None and len(gradient) == 2:
            volume = abs(float(np.linalg.det(frame.cell)))
            self.results["stress"] = full_3x3_to_voigt_6_stress(gradient[1].detach().double().numpy() / volume)
        elif "stress" in properties:
            reason = (
                "force_mixing has no energy whose strain derivative is its stress"
                if self.mode == "force_mixing"
                else "the cell is not periodic in 3D"
            )
            raise AdaScaleError(f"stress unavailable: {reason}")

    def _force_mixing(self, batch, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixture energies and per-atom mixed branch forces Σ_k w_ik F_ik (n, 3)."""
        energies, inputs = self.model.components(batch)
        mixed, weights = self.model.mix(energies, inputs, batch.numbers)
        branch_forces = [-torch.autograd.grad(e, positions, retain_graph=True)[0] for e in energies.sum(dim=0)]
        return mixed.detach(), torch.einsum("nk,knc->nc", weights.detach(), torch.stack(branch_forces))
