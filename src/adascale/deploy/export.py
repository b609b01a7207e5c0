"""``adascale export``: a trained model as a metatomic AtomisticModel (TorchScript), for every metatomic engine.

The exported file runs wherever metatomic does: ASE (``metatomic_ase.MetatomicCalculator``),
i-PI, LAMMPS built with metatomic, torch-sim. It holds the same model as the model directory,
compiled by TorchScript (adascale's models are written for it: see
:mod:`adascale.models.batch`), behind :class:`MetatomicEnergy`, which turns each metatomic
``System`` and the neighbour list the engine built for it into an
:class:`~adascale.models.batch.AtomsBatch` and returns the model's energy.

Only the energy is exported: the engine takes forces (and stress) as its gradients, so the
exported model is as conservative as the model. Units: Å and eV, as everywhere in adascale.
Species the model was not trained on are refused by the model itself, with the same message
as :class:`~adascale.deploy.calculator.AdaScaleCalculator`.

Limits: the electrostatics of the long-range models need the whole periodic system (Ewald/PME),
so their ``interaction_range`` is infinite and LAMMPS must run them on one domain.

Devices: every tensor the models make follows its input's device, so a float32 model declares
``supported_devices`` cuda and cpu (best first: engines take the first one they have; ``prefer``
reorders them); a float64 model declares the CPU only, as adascale runs float64 on the CPU only.
"""

from pathlib import Path
from typing import Dict, List, Optional  # noqa: UP035 - metatomic checks forward() against typing.List / Dict

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata, ModelOutput, NeighborListOptions, System
from torch import Tensor

from adascale import __version__
from adascale.errors import AdaScaleError
from adascale.files import atomic_output
from adascale.models.base import Branch
from adascale.models.batch import AtomsBatch
from adascale.models.io import copy_model

DTYPES = ("float32", "float64")
DEVICES = ("cuda", "cpu")  # the device types a float32 model declares, in the default order of preference


class MetatomicEnergy(torch.nn.Module):
    """metatomic's model interface over an adascale model: systems in, the "energy" TensorMap out.

    Requests one full neighbour list at the model's cutoff (strict, so the pairs are exactly
    those adascale's own list holds) and evaluates each system as a one-frame batch. Per-atom
    ("atom") and total ("system") energies, optionally for ``selected_atoms`` only.
    """

    def __init__(self, model: Branch) -> None:
        super().__init__()
        self.model = model
        self.cutoff = float(model.cutoff)
        self.neighbours = NeighborListOptions(cutoff=self.cutoff, full_list=True, strict=True, requestor="adascale")

    def requested_neighbor_lists(self) -> list[NeighborListOptions]:
        return [self.neighbours]

    def atom_energies(self, system: System) -> Tensor:
        """(n,) eV: the model's energy of every atom of one system."""
        pairs = system.get_neighbor_list(self.neighbours).samples.values.to(torch.long)  # (P, 5): i, j, shift a, b, c
        n = system.positions.shape[0]
        batch = AtomsBatch(
            system.types.to(torch.long),
            system.positions,
            system.cell[None],
            system.pbc[None],
            torch.zeros(n, dtype=torch.long, device=system.positions.device),
            pairs[:, :2].T.contiguous(),
            pairs[:, 2:].to(system.positions.dtype),
            1,
            self.cutoff,
        )
        energies, _ = self.model.atom_energies(batch)
        return energies

    def forward(
        self,
        systems: List[System],  # noqa: UP006
        outputs: Dict[str, ModelOutput],  # noqa: UP006
        selected_atoms: Optional[Labels] = None,  # noqa: UP045
    ) -> Dict[str, TensorMap]:  # noqa: UP006
        results: dict[str, TensorMap] = {}
        if "energy" not in outputs:
            return results
        per_atom = outputs["energy"].sample_kind == "atom"
        values: list[Tensor] = []
        samples: list[Tensor] = []
        for s, system in enumerate(systems):
            energies = self.atom_energies(system)
            atoms = torch.arange(energies.shape[0], device=energies.device)
            if selected_atoms is not None:
                chosen = selected_atoms.values
                atoms = chosen[chosen[:, 0] == s, 1].to(torch.long)
                energies = energies[atoms]
            if per_atom:
                values.append(energies[:, None])
                samples.append(torch.stack([torch.full_like(atoms, s), atoms], dim=1))
            else:
                values.append(energies.sum().reshape(1, 1))
                samples.append(torch.tensor([[s]], device=energies.device))
        names = ["system", "atom"] if per_atom else ["system"]
        device = systems[0].positions.device
        block = TensorBlock(
            values=torch.cat(values),
            samples=Labels(names, torch.cat(samples).to(torch.int32)),
            components=[],
            properties=Labels(["energy"], torch.tensor([[0]], device=device)),
        )
        results["energy"] = TensorMap(Labels(["_"], torch.tensor([[0]], device=device)), [block])
        return results


def supported_devices(dtype: str, prefer: str | None = None) -> list[str]:
    """The device types an exported model in ``dtype`` declares, best first (``prefer``: cpu or cuda
    first; None: cuda first). float64 is CPU only, so float64 preferring cuda is refused."""
    if prefer is not None and prefer not in DEVICES:
        raise AdaScaleError(f"device must be one of {', '.join(DEVICES)}, got {prefer!r}")
    if dtype == "float64":
        if prefer == "cuda":
            raise AdaScaleError("float64 on cuda: models run in float32 on GPUs; export float32 for cuda, or float64 for cpu")
        return ["cpu"]
    return sorted(DEVICES, key=lambda device: device != (prefer or DEVICES[0]))


def atomistic_model(model: Branch, *, dtype: str = "float32", name: str = "", device: str | None = None) -> AtomisticModel:
    """The metatomic AtomisticModel of ``model`` (any adascale kind), in ``dtype``; the model is copied.

    device: the device type to declare first (see :func:`supported_devices`)."""
    if dtype not in DTYPES:
        raise AdaScaleError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    devices = supported_devices(dtype, device)
    module = MetatomicEnergy(copy_model(model).to(getattr(torch, dtype)).eval()).eval()
    capabilities = ModelCapabilities(
        outputs={"energy": ModelOutput(unit="eV", sample_kind="atom")},
        atomic_types=list(model.species),
        interaction_range=model.interaction_range(),
        length_unit="angstrom",
        supported_devices=devices,
        dtype=dtype,
    )
    metadata = ModelMetadata(
        name=name or f"adascale {model.kind}",
        description=(
            f"adascale {__version__} model of kind {model.kind!r} (cutoff {model.cutoff:g} Å, species {list(model.species)}): "
            "energies in eV; forces and stress are its gradients."
        ),
    )
    return AtomisticModel(module, metadata, capabilities)


def export_model(model: Branch, out: "str | Path", *, dtype: str = "float32", name: str = "", device: str | None = None) -> Path:
    """Compile ``model`` with TorchScript and write it as a metatomic model file at ``out`` (atomically)."""
    out = Path(out)
    exported = atomistic_model(model, dtype=dtype, name=name, device=device)
    with atomic_output(out) as tmp:
        exported.save(str(tmp))
    return out
