"""``AdaScaleCalculator``: an ASE calculator for any adascale model (branch, mixture, scale-conditioned).

It keeps ASE's contract: energy, free_energy, energies (per atom) and forces always; stress
(ASE's sign and Voigt order, from the strain derivative of the energy) only for cells periodic
in all three directions, and ``PropertyNotImplementedError`` otherwise, as ASE's own
calculators do. The numbers come from :class:`adascale.deploy.potential.Potential`, which the
OpenMM engine shares (see there for the dtype, the Verlet skin and the two mixture modes).

Loading: ``AdaScaleCalculator(MODEL_DIR)`` for a model directory, or
``AdaScaleCalculator.from_run(RUN_DIR)`` for the model a finished ``adascale run`` deployed
(``RUN_DIR/deployed``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from adascale.deploy.potential import DEFAULT_SKIN, Potential
from adascale.errors import AdaScaleError
from adascale.layout import RunLayout

if TYPE_CHECKING:
    import torch

__all__ = ["AdaScaleCalculator", "load_model", "deployed_model_dir"]


def deployed_model_dir(run: str | Path) -> Path:
    """``RUN/deployed``: the model directory a finished ``adascale run`` deployed."""
    layout = RunLayout(run)
    if not layout.root.is_dir():
        raise AdaScaleError(f"{run}: no such run directory")
    if not layout.deployed.is_dir():
        raise AdaScaleError(
            f"{run}: this run has no deployed model ({layout.deployed} is missing); finish it with `adascale run --out {run}` "
            "or pass a model directory instead"
        )
    return layout.deployed


def load_model(path: str | Path):
    """The model of a model directory, in eval mode (the one place deployment loads models).

    A run directory passed here is refused with a pointer to ``from_run`` / ``--run``.
    """
    from adascale.models.base import Branch
    from adascale.models.io import load_model as load_saved_model

    path = Path(path)
    if RunLayout(path).looks_like_run():
        raise AdaScaleError(
            f"{path} is a run directory (adascale run output), not a model directory: use "
            f"AdaScaleCalculator.from_run({str(path)!r}) or --run {path}, or pass {RunLayout(path).deployed}"
        )
    return load_saved_model(path, expect=Branch)


class AdaScaleCalculator(Calculator):
    """ASE calculator over an adascale model.

    model: a model directory or an already built model (any :class:`adascale.models.base.Branch`).
    dtype: "float32" (default) or "float64". skin: Verlet skin in Å (0 rebuilds the list every call).
    mode: "conservative" or "force_mixing" (mixtures only; no stress).
    device: "cpu" (default), "cuda", "cuda:N" or a torch.device; on a GPU float32 only. ASE hands
    positions over as numpy arrays on the CPU and receives forces the same way.
    """

    def __init__(
        self,
        model,
        *,
        dtype: str = "float32",
        mode: str = "conservative",
        skin: float = DEFAULT_SKIN,
        device: str | torch.device = "cpu",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        model = load_model(model) if isinstance(model, (str, Path)) else model
        self.potential = Potential(model, dtype=dtype, skin=skin, mode=mode, device=device)
        self.model, self.mode = self.potential.model, mode
        self.implemented_properties = ["energy", "free_energy", "energies", "forces"]
        if self.potential.has_stress:
            self.implemented_properties.append("stress")

    @classmethod
    def from_run(cls, run: str | Path, **kwargs) -> AdaScaleCalculator:
        """The calculator of the model ``adascale run`` deployed in ``run`` (``run/deployed``)."""
        return cls(deployed_model_dir(run), **kwargs)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        pbc = np.asarray(self.atoms.pbc, dtype=bool)
        stress = "stress" in properties
        if stress and not pbc.all():
            raise PropertyNotImplementedError(f"stress needs a cell periodic in 3D, got pbc={pbc.tolist()}")
        result = self.potential.compute(self.atoms.numbers, self.atoms.positions, self.atoms.cell.array, pbc, stress=stress)
        self.results = {
            "energy": result.energy,
            "free_energy": result.energy,
            "energies": result.energies,
            "forces": result.forces,
        }
        if result.stress is not None:
            self.results["stress"] = full_3x3_to_voigt_6_stress(result.stress)
