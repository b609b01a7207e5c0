"""The layout of an ``adascale run`` directory: every path in it, spelled once.

A shared leaf (it imports nothing of adascale) so that every layer that meets a run directory
reads the same names: the pipeline writes it, ``evaluate`` reads it, model loading refuses it
(:mod:`adascale.models.io`) and ``AdaScaleCalculator.from_run`` finds the deployed model in it.

Layout of a run directory::

    config.yaml                  the resolved run config
    data/frames.extxyz           the testbed's frames (testbed runs)
    data/source.json             the user's files and their SHA-256 (``data:`` runs)
    data/{train,valid,test}.extxyz
    branches/<name>/             one model directory per anchor and per scale-conditioned phase
    branches/<name>_seed<k>/     seed k >= 1 of an anchor that trains several seeds (seed 0 is branches/<name>)
    predictions/{train,valid,test}.npz
                                 the anchors' PredictionSets with router features
    predictions/seeds/<name>_{valid,test}.npz
                                 every seed of an anchor with several (K = seeds, seed 0 first)
    seeds.json                   those anchors' MAEs over seeds and frames (two-level bootstrap)
    seed_null.json               the seed-null attribution (two seeds of one anchor against the scale pair)
    refine.json                  the pool refinement (fitted on validation, reported on test)
    routers/                     hard/, soft/, selected.json (the learned routers)
    route.json                   their report on test
    mixture/, mixture.json       the conservative mixture (a model directory) and its report
    adaptive.json                the scale-conditioned model's scale analysis (when it runs)
    deploy.json                  the deployment choice (validation) and its test report
    deployed/                    a copy of the chosen model directory
    deployed_test_losses.npy     its per-sample test losses (N,) eV/Å
    pressure.json                the deployed model's molecular pressure beside the labels' on test frames
    validate/                    validate.json, validate.md and plots: the deployed model's MD against
                                 the reference force field (with a ``validate:`` block)
    report.json, report.md       the merged report
    plots/                       its figures
    .stages/<stage>.json         a marker per finished stage (the cache key of that stage)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "valid", "test")
DEPLOYED = "deployed"
REPORT_JSON, REPORT_MD, PLOTS = "report.json", "report.md", "plots"
STAGES = ".stages"


def seed_model_name(name: str, seed: int) -> str:
    """The name of seed ``seed`` of anchor ``name`` (its model directory under branches/, its
    training stage ``train_<that name>``, its name in reports): seed 0 is the anchor itself."""
    return name if seed == 0 else f"{name}_seed{seed}"


@dataclass(frozen=True)
class RunLayout:
    """Every path of the run directory ``root`` (see the module docstring)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def frames(self) -> Path:
        """The testbed's frames, before the split."""
        return self.data / "frames.extxyz"

    @property
    def source(self) -> Path:
        return self.data / "source.json"

    def split(self, name: str) -> Path:
        """Frames of one split (``train``, ``valid`` or ``test``)."""
        return self.data / f"{name}.extxyz"

    def branch(self, name: str) -> Path:
        return self.root / "branches" / name

    def seed_branch(self, name: str, seed: int) -> Path:
        """The model directory of seed ``seed`` of anchor ``name`` (seed 0: ``branch(name)``)."""
        return self.branch(seed_model_name(name, seed))

    def predictions(self, split: str) -> Path:
        return self.root / "predictions" / f"{split}.npz"

    def seed_predictions(self, name: str, split: str) -> Path:
        """Every seed of anchor ``name`` on one split, a PredictionSet (seed 0 first)."""
        return self.root / "predictions" / "seeds" / f"{name}_{split}.npz"

    @property
    def seeds(self) -> Path:
        return self.root / "seeds.json"

    @property
    def seed_null(self) -> Path:
        return self.root / "seed_null.json"

    @property
    def refine(self) -> Path:
        return self.root / "refine.json"

    @property
    def routers(self) -> Path:
        return self.root / "routers"

    @property
    def route(self) -> Path:
        return self.root / "route.json"

    @property
    def mixture(self) -> Path:
        return self.root / "mixture"

    @property
    def mixture_report(self) -> Path:
        return self.root / "mixture.json"

    @property
    def adaptive(self) -> Path:
        return self.root / "adaptive.json"

    @property
    def deploy(self) -> Path:
        return self.root / "deploy.json"

    @property
    def deployed(self) -> Path:
        return self.root / DEPLOYED

    @property
    def deployed_staging(self) -> Path:
        """Where the deployed model is assembled before it replaces ``deployed/`` in one rename."""
        return self.root / f".{DEPLOYED}.tmp"

    @property
    def deployed_test_losses(self) -> Path:
        return self.root / "deployed_test_losses.npy"

    @property
    def pressure(self) -> Path:
        return self.root / "pressure.json"

    @property
    def validation(self) -> Path:
        """The directory of ``adascale validate``'s outputs for the deployed model."""
        return self.root / "validate"

    @property
    def report_json(self) -> Path:
        return self.root / REPORT_JSON

    @property
    def report_md(self) -> Path:
        return self.root / REPORT_MD

    @property
    def plots(self) -> Path:
        return self.root / PLOTS

    @property
    def stages(self) -> Path:
        return self.root / STAGES

    def stage_marker(self, name: str) -> Path:
        """Written when stage ``name`` finished, holding its key."""
        return self.stages / f"{name}.json"

    def looks_like_run(self) -> bool:
        """Whether ``root`` is (or was begun as) a run directory rather than a model directory."""
        return self.deployed.is_dir() or self.report_json.is_file() or self.stages.is_dir()
