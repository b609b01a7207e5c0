"""One tiny training case per trainable model kind, for the tests of the one loop (resume, hooks).

Each case is built the same way in any process (seeded), so a run killed in a subprocess and
resumed here can be compared with an uninterrupted run. Adding a kind is one entry in CASES.
"""

from __future__ import annotations

import numpy as np
import torch

from adascale.models.long_range import LongRangePaiNN
from adascale.models.painn import PaiNN
from adascale.models.router import RouterModel
from adascale.models.scale_conditioned import ScaleConditionedPaiNN
from adascale.training.loop import LoopSettings
from adascale.training.mixture import MixtureSettings, build_mixture
from adascale.training.tasks import ArrayTask, FrameLoss, FrameTask
from models.branch_checks import SPECIES
from training.tiny_data import labelled_frames

#: 4 training items, one per step: 3 epochs = 12 steps, a checkpoint every 3 steps.
SETTINGS = LoopSettings(seed=0, learning_rate=0.01, warmup_steps=2, max_epochs=3, checkpoint_every_steps=3, patience=10)
TOTAL_STEPS = 12


class NoisyPaiNN(PaiNN):
    """A PaiNN that draws random numbers in training mode (jittered positions), as the
    scale-conditioned model draws random per-atom scales: resume must reproduce the draws."""

    kind = "noisy_painn"

    def atom_energies(self, batch):
        if self.training:
            batch = batch.with_positions(batch.positions + 0.02 * torch.randn_like(batch.positions))
        return super().atom_energies(batch)


def _frames():
    return labelled_frames(4, seed=0), labelled_frames(2, seed=1)


def _frame_case(model: torch.nn.Module, loss: FrameLoss = FrameLoss(energy_weight=1.0)):
    train, valid = _frames()
    return FrameTask(model.double(), train, valid, loss), SETTINGS


def painn_case():
    torch.manual_seed(0)
    return _frame_case(PaiNN(SPECIES, cutoff=3.0, features=8, interactions=1, average_neighbours=5.0))


def long_range_case():
    torch.manual_seed(0)
    model = LongRangePaiNN(
        SPECIES, cutoff=3.5, features=8, interactions=1, average_neighbours=5.0, exclusion_inner=1.5, exclusion_outer=2.5
    )
    return _frame_case(model)


def noisy_case():
    torch.manual_seed(0)
    return _frame_case(NoisyPaiNN(SPECIES, cutoff=3.0, features=8, interactions=1, average_neighbours=5.0))


def scale_conditioned_case(scale_mode: str = "random"):
    """The scale-conditioned branch; in "random" mode it draws per-atom scales in training."""
    torch.manual_seed(0)
    model = ScaleConditionedPaiNN(
        SPECIES,
        cutoff=3.5,
        min_radius=2.5,
        features=8,
        interactions=1,
        average_neighbours=5.0,
        electrostatics="ewald",
        exclusion_inner=1.5,
        exclusion_outer=2.5,
        router_radii=(2.5, 3.5),
        router_hidden=(8,),
        scale_mode=scale_mode,
    )
    return _frame_case(model)


def mixture_case(trainable: list[str] | None = None):
    """The conservative mixture of a local and a long-range branch; ``trainable`` as LoopSettings'."""
    torch.manual_seed(0)
    local = PaiNN(SPECIES, cutoff=3.0, features=8, interactions=1, average_neighbours=5.0)
    long_range = LongRangePaiNN(
        SPECIES, cutoff=3.5, features=8, interactions=1, average_neighbours=5.0, exclusion_inner=1.5, exclusion_outer=2.5
    )
    train, valid = _frames()
    settings = MixtureSettings(dtype="float64", hidden=(8,), feature_radii=(2.5, 3.5))
    mixture = build_mixture([local, long_range], [0.0, 1.0], train[0], settings, (11, 17))
    task = FrameTask(mixture, train, valid, FrameLoss(force_loss="l1"))
    return task, LoopSettings(**{**SETTINGS.__dict__, "trainable": trainable})


def router_case():
    """A router MLP on fixed random features, fitted to random targets (16 rows per step)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=generator)
    target = torch.randn(64, 3, generator=generator)
    valid_x, valid_target = torch.randn(16, 6, generator=generator), torch.randn(16, 3, generator=generator)
    torch.manual_seed(0)
    model = RouterModel(6, 3, (8,), routing={"kind": "hard"})

    def objective(out, rows):
        return ((out - target[rows]) ** 2).mean()

    def validate():
        error = float((model(valid_x) - valid_target).abs().mean())
        return {"mae": {"all": error, "ions": None, "close_contact": None}}

    return ArrayTask(model, x, objective, validate), LoopSettings(**{**SETTINGS.__dict__, "batch_size": 16})


#: kind -> a function building (task, settings).
CASES = {
    "scale_conditioned": scale_conditioned_case,  # random per-atom scales in training
    "scale_conditioned_router": lambda: scale_conditioned_case("router"),
    "painn": painn_case,
    "painn_long_range": long_range_case,
    "adaptive_mixture": lambda: mixture_case(trainable=[""]),  # all unfrozen
    "router": router_case,
    "noisy_painn": noisy_case,
}


def state_equal(a: dict, b: dict) -> bool:
    """Bit-for-bit equality of two state dicts."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def as_numpy(state: dict) -> dict:
    return {k: np.asarray(v) for k, v in state.items()}
