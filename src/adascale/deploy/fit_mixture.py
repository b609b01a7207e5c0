"""Fit the conservative mixture's router with the branches frozen, and report it on test frames.

Two stages, both loss-guided on forces:

1. Warm start (cheap): evaluate the frozen branches once per frame (forces, atom energies,
   latents, geometric features) and fit a soft router on per-atom force mixing
   (:func:`adascale.scales.routers.fit_router`, blocks ``geometry`` + ``latent``, i.e.
   exactly the mixture router's inputs). Its weights go into the mixture's router; the
   energy offsets start at the per-species mean gap between each branch's atom energies
   and the first branch's.
2. Fine-tune (exact): minimise the L1 error of the mixture's *conservative* forces
   −∂E/∂R (second derivatives through the frozen branches) over a subset of training
   frames per epoch, by the one training loop (:mod:`adascale.training.loop`); the epoch
   best on validation frames is kept.

:func:`evaluate_frames` runs every branch and the mixture on labelled frames in one forward
pass, so both deployment modes (per-atom force mixing, conservative energy mixture) are
measured on the same samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from adascale.data.regimes import DEFAULT_ION_SPECIES
from adascale.models.base import Branch
from adascale.models.batch import AtomsBatch
from adascale.models.features import FeatureSpec
from adascale.models.mixture import AdaptiveMixture
from adascale.predictions import PredictionSet
from adascale.scales.analysis import analyze
from adascale.scales.features import ROUTER_FEATURES_KEY, ROUTER_SPEC_KEY
from adascale.scales.metrics import DEFAULT_RESAMPLES
from adascale.scales.oracles import anchor_errors, best_global_scale
from adascale.scales.router_report import add_methods
from adascale.scales.routers import FitResult, RouterInputs, TrainSettings, fit_router
from adascale.training.loop import LoopSettings, TrainingLoop, TrainResult
from adascale.training.tasks import FrameLoss, FrameTask
from adascale.units import KJ_MOL_NM_PER_EV_A, force_unit_factor

#: extras key of the branches' atom energies (N, K) eV in sets made by :func:`evaluate_frames`.
ATOM_ENERGIES_KEY = "branch_atom_energies"

Progress = Callable[[str, int, int, str], None]  # (stage, done, total, status)

#: Default router coordination radii, as fractions of the largest branch cutoff: (3.5, 5, 6) Å for
#: 6 Å branches. Features that stay within the branches' reach let one neighbour list serve
#: features and branches: FeatureSpec's own default (3.5, 5, 6.5, 8) Å needs an 8 Å list, with
#: 2.4x the edges of a 6 Å one, and made the features cost 2.4x (43 vs 18 ms of a ~210 ms force
#: call at 748 atoms). Measured on the default run's branches (refit with its settings, seeds 0
#: and 1): test MAE 44.44 / 44.20 kJ/mol/nm with these radii, 44.25 / 44.40 with the 8 Å ones,
#: and 45.22 / 45.23 with (3, 4.5, 6) Å: the 3.5 Å count matters, the 6.5 and 8 Å ones do not.
FEATURE_RADII_FRACTIONS = (7 / 12, 5 / 6, 1.0)


@dataclass
class MixtureSettings:
    """Sizes and budgets of the mixture fit; frame counts take evenly spaced frames."""

    train_frames: int = 100  # warm-start frames (all atoms of each)
    valid_frames: int = 20  # early stopping of both stages
    finetune_frames: int = 20  # training frames per fine-tuning epoch (a different subset each epoch)
    finetune_epochs: int = 5
    finetune_minutes: float = 10.0  # wall-clock upper bound of stage 2 (a fine-tune cut by it is flagged)
    lr: float = 3e-4
    hidden: tuple[int, ...] = (64, 64)
    smoothing: float = 0.05  # corner rounding of the router's weight map (continuous forces need > 0)
    feature_radii: tuple[float, ...] | None = None  # Å, the router's coordination radii (None: FEATURE_RADII_FRACTIONS)
    use_latent: bool = True
    seed: int = 0
    dtype: str = "float32"
    joint: bool = False  # stage 2 unfreezes the branches: router, offsets and branches trained together
    gauge_penalty: float = 0.1  # joint only: weight of the per-atom energy disagreement where weights vary (1/eV^2 x eV^2)
    global_weight: bool = False  # one learned scale for every atom (the capacity-without-adaptivity control)


def build_mixture(
    branches: Sequence[Branch], scales: Sequence[float], probe_frame, settings: MixtureSettings, ion_species=DEFAULT_ION_SPECIES
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


def evenly_spaced(items: Sequence, count: int) -> list:
    """``count`` items spread evenly over the sequence (all when it is shorter)."""
    if count >= len(items):
        return list(items)
    stride = len(items) / count
    return [items[int(i * stride)] for i in range(count)]


def evaluate_frames(
    mixture: AdaptiveMixture,
    frames: Sequence,
    *,
    with_mixture: bool = True,
    progress: Progress | None = None,
    stage: str = "evaluate",
) -> tuple[PredictionSet, np.ndarray | None]:
    """Every branch and the mixture on labelled ``frames`` in one forward pass per frame.

    Returns the PredictionSet of the branch forces (as ``adascale predict`` writes it, with
    each branch's latents ``latent_k``) whose extras also hold the router's geometric
    features and the branches' atom energies, and the mixture's conservative forces (N, 3)
    eV/Å (None without ``with_mixture``: one backward pass less per frame).
    """
    from adascale.models.inference import BranchOutput, predict

    dtype = mixture.energy_offsets.dtype
    k, n_geometry = mixture.n_branches, len(mixture.spec.names)
    forces, inputs, energies = [], [], []
    for index, frame in enumerate(frames):
        batch = AtomsBatch.from_frame(frame, mixture.cutoff, dtype=dtype)
        positions = batch.positions.requires_grad_(True)
        atom_energies, router_inputs = mixture.components(batch)
        totals = list(atom_energies.sum(dim=0))
        if with_mixture:
            totals.append(mixture.mix(atom_energies, router_inputs, batch.numbers)[0].sum())
        forces.append(
            torch.stack([-torch.autograd.grad(total, positions, retain_graph=True)[0] for total in totals])
            .detach()
            .double()
            .numpy()
        )
        inputs.append(router_inputs.detach().double().numpy())
        energies.append(atom_energies.detach().double().numpy())
        if progress is not None:
            progress(stage, index + 1, len(frames), "")
    bounds = np.cumsum([n_geometry] + mixture.latent_widths)  # branch b's latents: columns bounds[b]:bounds[b + 1]
    outputs = [
        BranchOutput(branch.kind, [f[b] for f in forces], [x[:, bounds[b] : bounds[b + 1]] for x in inputs] if width else None)
        for b, (branch, width) in enumerate(zip(mixture.branches, mixture.latent_widths))
    ]
    predictions = predict(frames, outputs, metadata={"ion_species": list(mixture.spec.ion_species)})
    predictions.scales = np.asarray(mixture.scales)
    predictions.metadata[ROUTER_SPEC_KEY] = mixture.spec.to_dict()
    predictions.extras[ROUTER_FEATURES_KEY] = np.concatenate(inputs)[:, :n_geometry]
    predictions.extras[ATOM_ENERGIES_KEY] = np.concatenate(energies)
    return predictions, np.concatenate([f[k] for f in forces]) if with_mixture else None


def warm_start(
    mixture: AdaptiveMixture, train: PredictionSet, valid: PredictionSet, settings: MixtureSettings, on_epoch=None
) -> FitResult:
    """Stage 1: a soft router on per-atom force mixing of the mixture's own inputs, copied into it,
    and the energy offsets aligned per species."""
    blocks = ["geometry"] + (["latent"] if any(mixture.latent_widths) else [])
    router_settings = TrainSettings(hidden=settings.hidden, smoothing=settings.smoothing, seed=settings.seed)
    fit = fit_router("soft", train, valid, blocks=blocks, settings=router_settings, on_epoch=on_epoch)
    dtype = mixture.energy_offsets.dtype
    mixture.router.load_state_dict({name: value.to(dtype) for name, value in fit.router.net.state_dict().items()})
    energies = train.extras[ATOM_ENERGIES_KEY]  # (N, K)
    offsets = np.zeros(tuple(mixture.energy_offsets.shape))
    for s, z in enumerate(mixture.species):
        rows = train.species == z
        if rows.any():
            offsets[:, s] = (energies[rows, :1] - energies[rows]).mean(axis=0)
    with torch.no_grad():
        mixture.energy_offsets.copy_(torch.as_tensor(offsets))
    return fit


def finetune(
    mixture: AdaptiveMixture,
    train_frames: Sequence,
    valid_frames: Sequence,
    settings: MixtureSettings,
    progress: Progress | None = None,
) -> TrainResult:
    """Stage 2: the one training loop on the router and offsets (with ``joint``, the branches too),
    loss = L1 of the conservative forces (+ the mixture's gauge penalty when joint).

    One frame per step, ``finetune_frames`` frames per epoch (a fresh seeded subset each),
    ``finetune_epochs`` epochs with ``finetune_minutes`` as a wall-clock upper bound; the warm
    start is validated first (epoch 0) and the epoch best on ``valid_frames`` is kept.
    """
    task = FrameTask(mixture, train_frames, valid_frames, FrameLoss(force_loss="l1"))
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


def fit_mixture(
    branches: Sequence[Branch],
    scales: Sequence[float],
    train_frames: Sequence,
    valid_frames: Sequence,
    test_frames: Sequence,
    *,
    settings: MixtureSettings = MixtureSettings(),
    units: str = "kJ/mol/nm",
    n_resamples: int = DEFAULT_RESAMPLES,
    progress: Progress | None = None,
    ion_species: Sequence[int] = DEFAULT_ION_SPECIES,
) -> tuple[AdaptiveMixture, dict]:
    """Build, warm-start and fine-tune a mixture; report both deployment modes on ``test_frames``.

    The report is :func:`adascale.scales.analysis.analyze` of the test branch predictions
    (``best_global_s`` fitted on the validation frames) plus ``router_force_mixing`` (the
    warm-start router mixing forces per atom: fast, not conservative),
    ``mixture_force_mixing`` (the final mixture's weights mixing forces per atom) and
    ``mixture`` (the conservative energy mixture's forces), with ``gain_recovered``.
    """
    train_frames = list(train_frames)
    mixture = build_mixture(branches, scales, train_frames[0], settings, ion_species)
    warm_frames = evenly_spaced(train_frames, settings.train_frames)
    valid_frames = evenly_spaced(list(valid_frames), settings.valid_frames)
    train, _ = evaluate_frames(mixture, warm_frames, with_mixture=False, progress=progress, stage="branches on train")
    valid, _ = evaluate_frames(mixture, valid_frames, with_mixture=False, progress=progress, stage="branches on valid")
    if settings.global_weight:  # no router to warm-start: the one scale starts at the best fixed scale on train
        warm = None
        with torch.no_grad():
            mixture.global_scale.fill_(best_global_scale(anchor_errors(train), train.scales)[0])
    else:
        warm = warm_start(
            mixture,
            train,
            valid,
            settings,
            on_epoch=None
            if progress is None
            else (
                lambda row: progress("warm start", row["epoch"], TrainSettings().max_epochs, f"valid {row['valid_mae']:.4f} eV/Å")
            ),
        )
    tuned = finetune(mixture, train_frames, valid_frames, settings, progress)
    mixture.eval().requires_grad_(False)

    test, mixed = evaluate_frames(mixture, list(test_frames), progress=progress, stage="test")
    report = analyze(test, fit=valid, fit_label="validation frames", units=units, n_resamples=n_resamples)
    factor = force_unit_factor(units)
    losses = {"mixture": np.abs(mixed - test.ref).mean(axis=1)}
    if warm is not None:
        weights = router_weights(mixture, test)
        losses["router_force_mixing"] = warm.router.sample_loss(test)
        losses["mixture_force_mixing"] = np.abs(np.einsum("nk,knc->nc", weights, test.pred) - test.ref).mean(axis=1)
    add_methods(report, test, losses, n_resamples=n_resamples)
    report["methods"]["mixture"]["conservative"] = True
    report["mixture"] = {
        "settings": asdict(settings) | {"feature_radii": list(mixture.spec.radii)},
        "warm_start_valid_mae": None if warm is None else warm.valid_mae * factor,
        "finetune_history": [
            {
                "epoch": row["epoch"],
                "train_mae": _scaled(row.get("train_force_mae"), factor / KJ_MOL_NM_PER_EV_A),
                "valid_mae": _scaled(row["valid_force_mae"]["all"], factor / KJ_MOL_NM_PER_EV_A),
            }
            for row in tuned.history
        ],
        "finetune": tuned.outcome(),
        "fitted_on": {
            "router": "training frames",
            "early stopping and best_global_s": "validation frames",
            "reported_on": "test frames",
        },
    }
    return mixture, report


def router_weights(mixture: AdaptiveMixture, predictions: PredictionSet) -> np.ndarray:
    """(N, K) the mixture router's weights on a set made by :func:`evaluate_frames`."""
    blocks = ["geometry"] + (["latent"] if any(mixture.latent_widths) else [])
    x = torch.as_tensor(RouterInputs.of(predictions).matrix(blocks, []), dtype=mixture.energy_offsets.dtype)
    with torch.no_grad():
        return mixture.weights(x).double().numpy()


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor
