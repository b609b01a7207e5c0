"""The scale-conditioned branch through the one trainer: trunk at random scales, then its router."""

from __future__ import annotations

import torch
from tiny_data import labelled_frames

from adascale.models.batch import AtomsBatch
from adascale.models.io import load_model
from adascale.models.scale_conditioned import ScaleConditionedPaiNN
from adascale.training.config import load_config
from adascale.training.trainer import Trainer

FAST = [
    "model.cutoff=3.4",
    "model.features=8",
    "model.interactions=1",
    "model.interaction_cutoff=2.5",
    "model.scale.min_radius=2.5",
    "model.scale.router_radii=[2.0, 3.4]",
    "model.scale.router_hidden=[8]",
    "model.electrostatics.exclusion_inner=1.5",
    "model.electrostatics.exclusion_outer=2.5",
    "model.electrostatics.method=ewald",
    "training.warmup_steps=2",
    "training.dtype=float64",
]


def test_trunk_then_router_phase(tmp_path):
    train, valid = labelled_frames(4, seed=0), labelled_frames(2, seed=1)
    trunk = Trainer(
        load_config("scale_conditioned", FAST + ["training.max_epochs=2"]), train, valid, tmp_path / "trunk", show_progress=False
    )
    trunk.run()
    model = load_model(tmp_path / "trunk")
    assert isinstance(model, ScaleConditionedPaiNN) and model.scale_mode == "random"

    overrides = [
        "training.max_epochs=2",
        "model.scale.mode=router",
        "model.scale.fixed_scale=0.7",
        f"training.init_from={tmp_path / 'trunk'}",
    ]
    router_phase = Trainer(
        load_config("scale_conditioned", FAST + overrides), train, valid, tmp_path / "router", show_progress=False
    )
    start = {name: value.clone() for name, value in router_phase.model.state_dict().items()}
    router_phase.run()
    routed = load_model(tmp_path / "router")
    assert routed.scale_mode == "router"
    # the warm start copied the trunk, and the router starts at fixed_scale = 0.7 for every atom
    for name, value in model.state_dict().items():
        assert torch.equal(start[name].to(value.dtype), value), name
    batch = AtomsBatch.from_frames(valid, routed.cutoff, dtype=torch.float64)
    router_phase.model.load_state_dict(start)
    first = router_phase.model.eval().atom_scales(batch)
    torch.testing.assert_close(first, torch.full_like(first, 0.7))
    scales = routed.atom_scales(batch)
    assert float(scales.detach().std()) > 0  # the router moved the atoms away from one common scale
    assert bool(((scales > 0) & (scales < 1)).all())
