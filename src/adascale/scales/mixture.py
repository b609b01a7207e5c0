"""Fit the conservative mixture's router with the branches frozen, and report it on test frames.

Two stages, both loss-guided on forces:

1. Warm start (cheap, here): evaluate the frozen branches once per frame (forces, atom
   energies, latents, geometric features) and fit a soft router on per-atom force mixing
   (:func:`adascale.scales.routers.fit_router`, blocks ``geometry`` + ``latent``, i.e.
   exactly the mixture router's inputs). Its weights go into the mixture's router; the
   energy offsets start at the per-species mean gap between each branch's atom energies
   and the first branch's.
2. Fine-tune (exact): the training of :mod:`adascale.training.mixture` on the mixture's
   conservative forces; the epoch best on validation frames is kept.

The warm start is a router fit, which the training layer may not import; so the fit that
chains both stages lives here, with the routers. :func:`evaluate_frames` runs every branch and
the mixture on labelled frames in one forward pass, so both deployment modes (per-atom force
mixing, conservative energy mixture) are measured on the same samples; :func:`mixture_report`
turns that into the report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from adascale.data.split import evenly_spaced
from adascale.models.base import Branch
from adascale.models.batch import AtomsBatch
from adascale.models.mixture import AdaptiveMixture
from adascale.predictions import PredictionSet
from adascale.scales.analysis import analyze
from adascale.scales.features import ROUTER_FEATURES_KEY, ROUTER_SPEC_KEY
from adascale.scales.metrics import ReportContext
from adascale.scales.oracles import anchor_errors, best_global_scale
from adascale.scales.router_report import add_methods
from adascale.scales.routers import FitResult, RouterInputs, TrainSettings, fit_router
from adascale.training.loop import TrainResult
from adascale.training.mixture import MixtureSettings, Progress, build_mixture, finetune
from adascale.units import KJ_MOL_NM_PER_EV_A, force_unit_factor

#: extras key of the branches' atom energies (N, K) eV in sets made by :func:`evaluate_frames`.
ATOM_ENERGIES_KEY = "branch_atom_energies"


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

    dtype, device = mixture.energy_offsets.dtype, mixture.energy_offsets.device  # batches go where the mixture is
    k, n_geometry = mixture.n_branches, len(mixture.spec.names)
    forces, inputs, energies = [], [], []
    for index, frame in enumerate(frames):
        batch = AtomsBatch.from_frame(frame, mixture.cutoff, dtype=dtype, device=device)
        positions = batch.positions.requires_grad_(True)
        atom_energies, router_inputs = mixture.components(batch)
        totals = list(atom_energies.sum(dim=0))
        if with_mixture:
            totals.append(mixture.mix(atom_energies, router_inputs, batch.numbers)[0].sum())
        forces.append(
            torch.stack([-torch.autograd.grad(total, positions, retain_graph=True)[0] for total in totals])
            .detach()
            .double()
            .cpu()
            .numpy()
        )
        inputs.append(router_inputs.detach().double().cpu().numpy())
        energies.append(atom_energies.detach().double().cpu().numpy())
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


def fit_mixture(
    branches: Sequence[Branch],
    scales: Sequence[float],
    train_frames: Sequence,
    valid_frames: Sequence,
    test_frames: Sequence,
    *,
    settings: MixtureSettings,
    context: ReportContext,
    progress: Progress | None = None,
) -> tuple[AdaptiveMixture, dict]:
    """Build, warm-start and fine-tune a mixture; report both deployment modes on ``test_frames``
    (:func:`mixture_report`). ``context.ion_species`` become the router's ion species."""
    train_frames = list(train_frames)
    mixture = build_mixture(branches, scales, train_frames[0], settings, context.ion_species)
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
    return mixture, mixture_report(mixture, settings, valid, test, mixed, warm, tuned, context)


def mixture_report(
    mixture: AdaptiveMixture,
    settings: MixtureSettings,
    valid: PredictionSet,
    test: PredictionSet,
    mixed: np.ndarray,
    warm: FitResult | None,
    tuned: TrainResult,
    context: ReportContext,
) -> dict:
    """The report of a fitted mixture on ``test`` (a set of :func:`evaluate_frames`, ``mixed`` its
    conservative forces (N, 3) eV/Å).

    :func:`adascale.scales.analysis.analyze` of the test branch predictions (``best_global_s``
    fitted on ``valid``) plus ``router_force_mixing`` (the warm-start router mixing forces per
    atom: fast, not conservative), ``mixture_force_mixing`` (the final mixture's weights mixing
    forces per atom) and ``mixture`` (the conservative energy mixture's forces), with
    ``gain_recovered``, and a ``mixture`` block: settings, warm start, fine-tune history.
    """
    report = analyze(test, fit=valid, fit_label="validation frames", units=context.units, n_resamples=context.n_resamples)
    factor = force_unit_factor(context.units)
    losses = {"mixture": np.abs(mixed - test.ref).mean(axis=1)}
    if warm is not None:
        weights = router_weights(mixture, test)
        losses["router_force_mixing"] = warm.router.sample_loss(test)
        losses["mixture_force_mixing"] = np.abs(np.einsum("nk,knc->nc", weights, test.pred) - test.ref).mean(axis=1)
    add_methods(report, test, losses, n_resamples=context.n_resamples)
    report["methods"]["mixture"]["conservative"] = True
    report["mixture"] = {
        "settings": settings.model_dump(mode="json") | {"feature_radii": list(mixture.spec.radii)},
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
    return report


def router_weights(mixture: AdaptiveMixture, predictions: PredictionSet) -> np.ndarray:
    """(N, K) the mixture router's weights on a set made by :func:`evaluate_frames`."""
    blocks = ["geometry"] + (["latent"] if any(mixture.latent_widths) else [])
    x = torch.as_tensor(RouterInputs.of(predictions).matrix(blocks, []), dtype=mixture.energy_offsets.dtype)
    with torch.no_grad():
        return mixture.weights(x).double().numpy()


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor
