"""Learned routers: each atom's scale from inference-time features, trained on the force loss.

A router never sees labels at inference: it reads :class:`RouterInputs` (the branches'
forces and per-atom features), which has no reference forces. Two kinds, both small MLPs
on standardised features, both trained on surrogates of the mixed-force L1 loss chosen so
that their gradients never vanish (softmax/sigmoid parameterisations of the plain loss
saturate: a router that sends every atom to the best fixed scale early on gets stuck there):

* ``hard``: logits z_i over a scale pool P, deployed as the argmax, F_i = F(p_i) on the
  axis. Trained on the regret-weighted cross-entropy
  Σ_i r_i · (−log softmax(z_i)_{m*_i}), with m*_i the pool scale of lowest loss ℓ_i(p) and
  r_i = max_m ℓ_i(p_m) − min_m ℓ_i(p_m) what the choice can cost. It bounds the expected
  regret of the softmax policy from above (Σ_m π_m (ℓ_m − ℓ_m*) ≤ r (1 − π_m*) ≤ r (−log π_m*)),
  is convex in the logits, and atoms with nothing at stake do not count.
* ``soft``: one real output u_i, deployed as the continuous scale s_i = clamp(u_i, 0, 1)
  through :func:`anchor_weights` (the axis's interpolation, its corners rounded by
  ``smoothing`` so that the same map is C2 inside the conservative mixture). Trained on
  the L1 loss of F(u_i) with the axis extended linearly beyond its ends, which equals the
  deployed loss inside [0, 1], is convex in u_i for two anchors, and keeps a gradient
  outside, where clamping the minimiser gives the best scale in [0, 1].

Training: the one loop (:class:`~adascale.training.loop.TrainingLoop` over an
:class:`~adascale.training.tasks.ArrayTask`): AdamW on shuffled minibatches of the training
samples; after every epoch the deployed router is scored on validation (MAE per subset) and
the best epoch is kept (early stopping). Saved in the one model format
(:func:`adascale.models.io.save_model`, kind ``router``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adascale.errors import AdaScaleError, located
from adascale.models.io import load_model, save_model
from adascale.models.router import RouterModel
from adascale.nn.smooth import anchor_weights
from adascale.predictions import PredictionSet
from adascale.scales.axis import as_pool, interpolate
from adascale.scales.features import ROUTER_FEATURES_KEY, ROUTER_SPEC_KEY, force_features
from adascale.scales.oracles import ScaleLosses, anchor_errors, best_global_scale
from adascale.training.loop import LoopSettings, TrainingLoop
from adascale.training.tasks import SUBSETS, ArrayTask

KINDS: tuple[str, ...] = ("hard", "soft")
#: Feature blocks a router may read (all available at inference, none reads labels).
BLOCKS: tuple[str, ...] = ("geometry", "species", "d_ion", "forces", "latent")
#: ``PredictionSet.extras`` keys of branch k's latent features (N, F_k), as ``adascale predict`` stores them.
LATENT_PREFIX = "latent_"
#: d_ion (nm) given to atoms of frames without another ion.
NO_ION_NM = 2.0


@dataclass
class RouterInputs:
    """What a router may read about N samples: no reference forces by construction.

    pred (K, N, 3) eV/Å branch forces; species (N,); d_ion (N,) nm (NaN: no other ion);
    extras: per-sample arrays such as geometric features (N, F) or branch k's latents ``latent_k`` (N, F_k);
    feature_spec: the FeatureSpec (as a dict) of the geometric features, when known.
    """

    pred: np.ndarray
    species: np.ndarray
    d_ion: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    feature_spec: dict | None = None

    @classmethod
    def of(cls, predictions: PredictionSet) -> RouterInputs:
        """The label-free part of a prediction set."""
        return cls(
            predictions.pred,
            predictions.species,
            predictions.d_ion,
            dict(predictions.extras),
            predictions.metadata.get(ROUTER_SPEC_KEY),
        )

    def default_blocks(self) -> list[str]:
        """Geometry if stored (else species and d_ion), branch forces, and latents if stored."""
        blocks = ["geometry"] if ROUTER_FEATURES_KEY in self.extras else ["species", "d_ion"]
        return blocks + ["forces"] + (["latent"] if LATENT_PREFIX + "0" in self.extras else [])

    def matrix(self, blocks: Sequence[str], species: Sequence[int]) -> np.ndarray:
        """(N, F) float32 features: the named blocks side by side, one-hot over ``species``."""
        columns = []
        for block in blocks:
            if block == "geometry":
                columns.append(self._extra(ROUTER_FEATURES_KEY, 2))
            elif block == "species":
                columns.append((np.asarray(self.species)[:, None] == np.asarray(species)[None, :]).astype(float))
            elif block == "d_ion":
                columns.append(np.nan_to_num(np.asarray(self.d_ion, dtype=float), nan=NO_ION_NM)[:, None])
            elif block == "forces":
                columns.append(force_features(self.pred)[0])
            elif block == "latent":
                columns += [self._extra(f"{LATENT_PREFIX}{k}", 2) for k in range(len(self.pred))]
            else:
                raise AdaScaleError(f"unknown router feature block {block!r}; choose from {', '.join(BLOCKS)}")
        return np.concatenate(columns, axis=1).astype(np.float32)

    def _extra(self, key: str, ndim: int) -> np.ndarray:
        if key not in self.extras:
            raise located("missing: the router was trained with it; store it at predict time", field=f"extras[{key!r}]")
        value = np.asarray(self.extras[key], dtype=float)
        if value.ndim != ndim:
            raise located(f"expected {ndim} dimensions, got shape {value.shape}", field=f"extras[{key!r}]")
        return value


@dataclass
class RouterConfig:
    """Everything that rebuilds a router besides its weights (saved as JSON)."""

    kind: str  # "hard" | "soft"
    anchors: list[float]  # (K,) anchor scales it was trained with
    blocks: list[str]  # feature blocks, in column order
    species: list[int]  # one-hot order of the "species" block
    n_inputs: int
    hidden: list[int]
    pool: list[float] | None = None  # hard: the scales it chooses from
    feature_spec: dict | None = None  # geometry block: the FeatureSpec it was trained on
    smoothing: float = 0.0  # soft: corner rounding of the deployed clamp (see anchor_weights)

    @property
    def n_outputs(self) -> int:
        return len(self.pool) if self.kind == "hard" else 1


class Router:
    """A trained router: maps :class:`RouterInputs` to per-sample scales and mixed forces.

    ``net`` is the saved model (kind ``router``); its ``routing`` holds this config as JSON."""

    def __init__(self, config: RouterConfig, net: RouterModel) -> None:
        self.config = config
        self.net = net.eval()

    def features(self, inputs: RouterInputs) -> np.ndarray:
        """(N, F) input matrix, after checking the inputs match what the router was trained on."""
        if inputs.pred.shape[0] != len(self.config.anchors):
            raise AdaScaleError(f"router expects {len(self.config.anchors)} branches, got {inputs.pred.shape[0]}")
        if "geometry" in self.config.blocks:
            stored = inputs.feature_spec
            if stored is not None and stored != self.config.feature_spec:
                raise AdaScaleError("geometric features were computed with another FeatureSpec than the router's")
        x = inputs.matrix(self.config.blocks, self.config.species)
        if x.shape[1] != self.config.n_inputs:
            raise AdaScaleError(f"router expects {self.config.n_inputs} features, got {x.shape[1]}")
        return x

    def outputs(self, inputs: RouterInputs, chunk: int = 1 << 16) -> torch.Tensor:
        """(N, n_out) raw outputs: logits over the pool (hard) or over the anchors (soft)."""
        x = torch.from_numpy(self.features(inputs))
        with torch.no_grad():
            return torch.cat([self.net(part) for part in x.split(chunk)])

    def weights(self, inputs: RouterInputs) -> np.ndarray:
        """(N, K) anchor weights of a soft router (its deployed map, :func:`anchor_weights`)."""
        u = self.outputs(inputs).double()[:, 0]
        return anchor_weights(u, torch.tensor(self.config.anchors, dtype=u.dtype), self.config.smoothing).numpy()

    def scales(self, inputs: RouterInputs) -> np.ndarray:
        """(N,) scale per sample: the chosen pool scale (hard) or the continuous s (soft)."""
        if self.config.kind == "hard":
            return np.asarray(self.config.pool)[self.outputs(inputs).argmax(dim=1).numpy()]
        return self.weights(inputs) @ np.asarray(self.config.anchors)

    def forces(self, inputs: RouterInputs) -> np.ndarray:
        """(N, 3) eV/Å routed forces."""
        if self.config.kind == "hard":
            return interpolate(inputs.pred, np.asarray(self.config.anchors), self.scales(inputs))
        return np.einsum("nk,knc->nc", self.weights(inputs), inputs.pred)

    def sample_loss(self, predictions: PredictionSet) -> np.ndarray:
        """(N,) per-sample loss mean_c |F_routed − F_ref| eV/Å (the labels are read only here)."""
        return np.abs(self.forces(RouterInputs.of(predictions)) - predictions.ref).mean(axis=1)

    def save(self, directory: str | Path) -> None:
        """The router as a model directory (model.json + weights.pt, :func:`adascale.models.io.save_model`)."""
        save_model(directory, self.net)

    @classmethod
    def load(cls, directory: str | Path) -> Router:
        """Rebuild a saved router (:func:`adascale.models.io.load_model`: weights_only, versioned format)."""
        net = load_model(directory, expect=RouterModel)
        try:
            config = RouterConfig(**net.routing)
        except TypeError as exc:
            raise located(f"corrupt router settings ({exc})", path=directory) from None
        return cls(config, net)


@dataclass
class TrainSettings:
    """Router training. Sizes are small on purpose: 10^5 samples train in seconds on a CPU."""

    hidden: tuple[int, ...] = (64, 64)
    max_epochs: int = 60
    patience: int = 10  # epochs without a better validation MAE before stopping
    batch_size: int = 2048
    lr: float = 3e-3
    weight_decay: float = 1e-4
    smoothing: float = 0.05  # soft: corner rounding of the deployed clamp, in units of an anchor interval
    seed: int = 0


@dataclass
class FitResult:
    router: Router
    valid_mae: float  # eV/Å, deployed router on the validation set
    history: list[dict]  # per epoch: {"epoch", "train_objective", "valid_mae"}


def fit_router(
    kind: str,
    train: PredictionSet,
    valid: PredictionSet,
    *,
    pool: Sequence[float] | None = None,
    blocks: Sequence[str] | None = None,
    settings: TrainSettings = TrainSettings(),
    on_epoch: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train a ``hard`` (needs ``pool``) or ``soft`` router on ``train``, keep the epoch best on ``valid``.

    Labels enter only the training objective and the validation score; the router's
    inputs are :class:`RouterInputs`. ``on_epoch`` receives each history row (for progress).
    """
    if kind not in KINDS:
        raise AdaScaleError(f"router kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "hard" and pool is None:
        raise AdaScaleError("a hard router needs a scale pool to choose from")
    if valid.K != train.K or not np.allclose(valid.scales, train.scales):
        raise AdaScaleError("training and validation sets have different anchors")
    inputs = RouterInputs.of(train)
    blocks = list(blocks) if blocks is not None else inputs.default_blocks()
    config = RouterConfig(
        kind=kind,
        anchors=train.scales.tolist(),
        blocks=blocks,
        species=sorted(int(z) for z in np.unique(train.species)),
        n_inputs=0,
        hidden=list(settings.hidden),
        pool=as_pool(pool).tolist() if kind == "hard" else None,
        feature_spec=train.metadata.get(ROUTER_SPEC_KEY) if "geometry" in blocks else None,
        smoothing=settings.smoothing if kind == "soft" else 0.0,
    )
    x = torch.from_numpy(inputs.matrix(blocks, config.species))
    config.n_inputs = x.shape[1]
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        net = RouterModel(config.n_inputs, config.n_outputs, settings.hidden, routing=asdict(config))
    net.fit_standardisation(x)
    if kind == "soft":  # start from the best fixed scale of the training set
        with torch.no_grad():
            net.mlp[-1].bias.fill_(best_global_scale(anchor_errors(train), train.scales)[0])
    objective = _hard_objective(train, config.pool) if kind == "hard" else _soft_objective(train)
    router = Router(config, net)
    masks = valid.masks()

    def validate() -> dict:
        loss = router.sample_loss(valid)
        return {"mae": {subset: float(loss[masks[subset]].mean()) if masks[subset].any() else None for subset in SUBSETS}}

    loop = TrainingLoop(
        ArrayTask(net, x, objective, validate),
        LoopSettings(
            seed=settings.seed,
            batch_size=min(settings.batch_size, len(x)),
            learning_rate=settings.lr,
            warmup_steps=0,
            schedule="constant",
            weight_decay=settings.weight_decay,
            gradient_clip=None,
            max_epochs=settings.max_epochs,
            patience=settings.patience,
            drop_last=False,
        ),
        on_validation=None if on_epoch is None else (lambda line: on_epoch(_history_row(line))),
    )
    result = loop.run()
    return FitResult(router=router, valid_mae=result.best_valid_mae, history=[_history_row(line) for line in result.history])


def _history_row(line: dict) -> dict:
    """A loop log line as a router history row (MAE in eV/Å)."""
    return {"epoch": line["epoch"], "train_objective": line["train_objective"], "valid_mae": line["valid_force_mae"]["all"]}


Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _hard_objective(train: PredictionSet, pool: list[float]) -> Objective:
    """Regret-weighted cross-entropy to each sample's best pool scale (see the module docstring)."""
    losses = ScaleLosses(anchor_errors(train), train.scales)
    table = torch.from_numpy(np.stack([losses.sample_loss(p) for p in pool], axis=1)).float()  # (N, M)
    best = table.argmin(dim=1)
    stake = table.max(dim=1).values - table.min(dim=1).values

    def objective(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return (stake[rows] * nn.functional.cross_entropy(logits, best[rows], reduction="none")).mean()

    return objective


def _soft_objective(train: PredictionSet) -> Objective:
    """Mean L1 of the force error at the scale u on the axis extended linearly beyond [0, 1]."""
    errors = torch.from_numpy(np.moveaxis(anchor_errors(train), 0, 1)).float()  # (N, K, 3)
    scales = torch.tensor(train.scales, dtype=torch.float32)

    def objective(u: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        weights = anchor_weights(u[:, 0], scales, extrapolate=True)
        return torch.einsum("nk,nkc->nc", weights, errors[rows]).abs().mean()

    return objective
