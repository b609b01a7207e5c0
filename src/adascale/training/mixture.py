"""The conservative mixture's settings, its construction from frozen branches, and its fine-tuning.

:class:`MixtureSettings` is the one source of the mixture's settings: the ``mixture:`` block of
a run config, ``adascale mixture --set KEY=VALUE`` and :func:`adascale.scales.mixture.fit_mixture`
all read it, and its defaults are the default run's. Frame counts take evenly spaced frames.

The fine-tune minimises the L1 error of the mixture's *conservative* forces −∂E/∂R (second
derivatives through the frozen branches) by the one training loop; the label-free warm start
before it is a router fit and lives with the routers (:mod:`adascale.scales.mixture`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from adascale.models.base import Branch
from adascale.models.batch import AtomsBatch
from adascale.models.features import FeatureSpec
from adascale.models.mixture import AdaptiveMixture
from adascale.training.loop import LoopSettings, TrainingLoop, TrainResult
from adascale.training.tasks import FrameLoss, FrameTask

Progress = Callable[[str, int, int, str], None]  # (stage, done, total, status)

#: Default router coordination radii, as fractions of the largest branch cutoff: (3.5, 5, 6) Å for
#: 6 Å branches. Features that stay within the branches' reach let one neighbour list serve
#: features and branches: FeatureSpec's own default (3.5, 5, 6.5, 8) Å needs an 8 Å list, with
#: 2.4x the edges of a 6 Å one, and made the features cost 2.4x (43 vs 18 ms of a ~210 ms force
#: call at 748 atoms). Measured on the default run's branches (refit with its settings, seeds 0
#: and 1): test MAE 44.44 / 44.20 kJ/mol/nm with these radii, 44.25 / 44.40 with the 8 Å ones,
#: and 45.22 / 45.23 with (3, 4.5, 6) Å: the 3.5 Å count matters, the 6.5 and 8 Å ones do not.
FEATURE_RADII_FRACTIONS = (7 / 12, 5 / 6, 1.0)


class MixtureSettings(BaseModel):
    """Sizes, budgets and architecture of the mixture fit (the run config's ``mixture`` block)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_frames: int = Field(40, ge=1, description="Training frames (evenly spaced, all atoms) of the warm start.")
    valid_frames: int = Field(20, ge=1, description="Validation frames (evenly spaced): early stopping of both stages.")
    finetune_frames: int = Field(
        18, ge=1, description="Training frames (one per step) per fine-tuning epoch, a fresh seeded subset each epoch."
    )
    finetune_epochs: int = Field(2, ge=0, description="Fine-tuning epochs on the conservative forces (0: warm start only).")
    finetune_minutes: float = Field(
        2.0, ge=0, description="Wall-clock upper bound of the fine-tuning (a fine-tune cut by it is flagged); 0: none."
    )
    lr: float = Field(3e-4, gt=0, description="Learning rate of the fine-tuning.")
    hidden: tuple[int, ...] = Field((64, 64), description="Widths of the router MLP.")
    smoothing: float = Field(0.05, gt=0, description="Corner rounding of the router's weight map (continuous forces need > 0).")
    feature_radii: tuple[float, ...] | None = Field(
        None, description="Å: the router's coordination radii (null: fixed fractions of the largest branch cutoff)."
    )
    use_latent: bool = Field(True, description="Route on the branches' latent features too, not only on geometry.")
    seed: int = Field(0, description="Seed of the router initialisation and the frame order.")
    dtype: Literal["float32", "float64"] = Field("float32", description="Precision of the mixture.")
    joint: bool = Field(False, description="Fine-tune the branches too (router, offsets and branches together).")
    gauge_penalty: float = Field(
        0.1, ge=0, description="Joint only: weight (1/eV^2) of the per-atom energy disagreement where weights vary."
    )
    global_weight: bool = Field(False, description="One learned scale for every atom (the capacity-without-adaptivity control).")
    species_force_weights: dict[int, float] = Field(
        default_factory=dict,
        description="Fine-tuning only: force-loss weight per atomic number (others 1), e.g. {11: 10, 17: 10} to aim at ions.",
    )


def build_mixture(
    branches: Sequence[Branch], scales: Sequence[float], probe_frame, settings: MixtureSettings, ion_species: Sequence[int]
) -> AdaptiveMixture:
    """A mixture of frozen ``branches`` with a fresh router; latent widths are read off ``probe_frame``."""
    dtype = getattr(torch, settings.dtype)
    branches = [branch.to(dtype).eval().requires_grad_(False) for branch in branches]
    species = sorted(set().union(*(branch.species for branch in branches)))
    with torch.no_grad():
        widths = [
            int(branch.atom_energies(AtomsBatch.from_frame(probe_frame, branch.cutoff, dtype=dtype))[1].shape[1])
            if settings.use_latent
            else 0
            for branch in branches
        ]
    spec = FeatureSpec(species=tuple(species), ion_species=tuple(ion_species), radii=feature_radii(branches, settings))
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        mixture = AdaptiveMixture(
            branches,
            scales,
            spec,
            widths,
            settings.hidden,
            settings.smoothing,
            global_weight=settings.global_weight,
            gauge_penalty=settings.gauge_penalty if settings.joint else 0.0,
        )
    return mixture.to(dtype).eval()


def feature_radii(branches: Sequence[Branch], settings: MixtureSettings) -> tuple[float, ...]:
    """Å: the router's coordination radii, ``settings.feature_radii`` or the default fractions of the largest branch cutoff."""
    if settings.feature_radii is not None:
        return tuple(settings.feature_radii)
    reach = max(branch.cutoff for branch in branches)
    return tuple(round(fraction * reach, 3) for fraction in FEATURE_RADII_FRACTIONS)


def finetune(
    mixture: AdaptiveMixture,
    train_frames: Sequence,
    valid_frames: Sequence,
    settings: MixtureSettings,
    progress: Progress | None = None,
) -> TrainResult:
    """The one training loop on the router and offsets (with ``joint``, the branches too),
    loss = L1 of the conservative forces, a mean over atoms weighted by ``species_force_weights``
    (+ the mixture's gauge penalty when joint).

    One frame per step, ``finetune_frames`` frames per epoch (a fresh seeded subset each),
    ``finetune_epochs`` epochs with ``finetune_minutes`` as a wall-clock upper bound; the warm
    start is validated first (epoch 0) and the epoch best on ``valid_frames`` is kept.
    """
    task = FrameTask(
        mixture,
        train_frames,
        valid_frames,
        FrameLoss(force_loss="l1", species_force_weights=dict(settings.species_force_weights)),
    )
    loop = TrainingLoop(
        task,
        LoopSettings(
            seed=settings.seed,
            learning_rate=settings.lr,
            warmup_steps=0,
            schedule="constant",
            gradient_clip=None,
            max_epochs=max(settings.finetune_epochs, 1),
            max_steps=None if settings.finetune_epochs > 0 else 0,
            epoch_items=settings.finetune_frames,
            patience=settings.finetune_epochs + 1,  # the epoch budget ends it, the best epoch is kept
            time_budget_minutes=settings.finetune_minutes or None,
            validate_at_start=True,
            trainable=[""] if settings.joint else None,
        ),
        on_step=None if progress is None else (lambda done, total, status: progress("fine-tune", done, total, status)),
    )
    return loop.run()
