"""The stages of ``adascale run`` and ``adascale evaluate``, with their caching.

``run``: testbed (OpenMM, cached) → split (or, with ``data:``, the user's own frames, checked
and split; keyed by their content hash) → train each anchor → predict train/valid/test →
refine the pool (fitted on validation) → route (routers fitted on train, selected on
validation) → conservative mixture → report, all reported on test. Each stage is keyed by
its settings and upstream keys (:mod:`adascale.stages`), so a re-run redoes only what
changed, and a killed run resumes (training continues from its checkpoint).

``evaluate``: a finished run's branches, refined pool, routers and mixture applied to new
labelled frames, reported the same way.

Layout of a run directory::

    config.yaml            the resolved run config
    data/                  frames.extxyz, train/valid/test.extxyz
    branches/<name>/       one model directory per anchor (adascale train)
    predictions/           train/valid/test.npz (PredictionSets with router features)
    refine.json            the pool refinement (fitted on validation, reported on test)
    routers/               hard/, soft/, selected.json (adascale route)
    mixture/               the conservative mixture (an AdaScaleCalculator model dir)
    report.json, report.md, plots/
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from rich.console import Console

from adascale.data.frames import Frame, check_cutoff, read_frames
from adascale.data.regimes import DEFAULT_ION_SPECIES, SUBSETS
from adascale.data.user_data import check_ion_species, check_split_species, file_sha256, ion_numbers, split_counts
from adascale.deploy.calculator import DEPLOYED_DIR
from adascale.errors import AdaScaleError
from adascale.files import atomic_output, write_json
from adascale.predictions import PredictionSet
from adascale.runtime import set_threads
from adascale.scales.methods import MIXTURE, MIXTURE_FORCE_MIXING, MIXTURE_METHODS, ROUTER, router_name
from adascale.stages import Stage, StageRunner

SPLITS = ("train", "valid", "test")
SOURCE_JSON = "source.json"  # in data/: the user's files and their SHA-256 (``data:`` runs)
REPORT_JSON, REPORT_MD, PLOTS_DIR = "report.json", "report.md", "plots"
ADAPTIVE_JSON, DEPLOY_JSON = "adaptive.json", "deploy.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TestbedSettings(_Strict):
    """The NaCl(aq) testbed (``adascale generate nacl``'s options)."""

    frames: int = Field(300, description="Frames in total (all replicas).")
    box_nm: float = Field(2.0, description="Cubic box edge, nm.")
    molar: float = Field(1.0, description="NaCl concentration, mol/L.")
    temperature: float = Field(300.0, description="K.")
    stride_ps: float = Field(0.5, description="ps between frames.")
    equil_ps: float = Field(20.0, description="NPT equilibration per replica, ps.")
    seed: int = Field(0, description="Seed of the simulation.")
    replicas: int = Field(2, description="Parallel trajectories.")
    labels: str = Field("spce", description="spce, or amoeba: the same frames relabelled with amoeba2018.xml.")


class AnchorSettings(_Strict):
    """One anchor branch: a training config (built-in name or YAML path) and overrides."""

    name: str = Field(description="Directory name under branches/ and the branch's name in reports.")
    config: str = Field(description="Built-in training config (local, long_range) or a YAML path.")
    overrides: list[str] = Field(default_factory=list, description="`key=value` overrides, as `adascale train --set`.")


class AdaptiveSettings(_Strict):
    """The scale-conditioned model: its trunk trained at random per-atom scales, then its label-free router.

    The router phase starts from the trunk's weights with every atom at the trunk's best single
    scale on validation (the control), and moves the scales through the force loss.
    """

    name: str = Field("scale_conditioned", description="Directory name under branches/ and the model's name in reports.")
    config: str = Field("scale_conditioned", description="Training config of both phases (built-in name or YAML path).")
    trunk_overrides: list[str] = Field(default_factory=list, description="`key=value` overrides of the trunk phase.")
    router_overrides: list[str] = Field(default_factory=list, description="`key=value` overrides of the router phase.")
    grid_points: int = Field(
        9, ge=2, description="Scales 0, 1/(n-1), ..., 1 at which the scale analysis evaluates the model (valid and test)."
    )


class DataSettings(_Strict):
    """The user's own labelled frames (``adascale run --data``); they replace ``testbed`` and ``split``."""

    file: str | None = Field(None, description="Frames (any format ASE reads), cut into contiguous blocks by `split`.")
    split: tuple[float, float, float] = Field((0.8, 0.1, 0.1), description="Train/valid/test fractions of `file`.")
    train: str | None = Field(None, description="Training frames (with `valid` and `test`, instead of `file`).")
    valid: str | None = Field(None, description="Validation frames.")
    test: str | None = Field(None, description="Test frames.")
    ion_species: list[str] = Field(["Na", "Cl"], description="Ion species (symbols): d_i and the report subsets.")
    forces_key: str = Field("REF_forces", description="Reference force array (eV/Å); 'forces' is the fallback.")
    energy_key: str = Field("REF_energy", description="Reference energy (eV); 'energy' is the fallback.")

    @model_validator(mode="after")
    def _one_source(self) -> DataSettings:
        sets = (self.train, self.valid, self.test)
        if (self.file is not None) == any(path is not None for path in sets) or (self.file is None and None in sets):
            raise ValueError("give either `file` (cut by `split`) or all three of `train`, `valid` and `test`")
        if min(self.split) <= 0 or sum(self.split) > 1 + 1e-9:
            raise ValueError(f"split fractions must be positive and add up to at most 1, got {list(self.split)}")
        try:
            ion_numbers(self.ion_species)
        except AdaScaleError as exc:
            raise ValueError(str(exc)) from None
        return self

    def sources(self) -> dict[str, Path]:
        """The data files by role: ``{"all": file}`` or ``{"train": .., "valid": .., "test": ..}``."""
        if self.file is not None:
            return {"all": Path(self.file)}
        return {name: Path(getattr(self, name)) for name in SPLITS}


class RunConfig(_Strict):
    """Everything ``adascale run`` does; see ``adascale/configs/run.yaml`` for the defaults."""

    testbed: TestbedSettings = Field(default_factory=TestbedSettings)
    data: DataSettings | None = Field(None, description="Your own labelled frames instead of the testbed (and `split`).")
    split: tuple[int, int, int] = Field((200, 40, 60), description="Contiguous train/valid/test frame counts.")
    anchors: list[AnchorSettings] = Field(min_length=2, description="Anchors, shortest range first (scales 0 .. 1).")
    route_train_frames: int = Field(60, ge=1, description="Training frames (evenly spaced) the routers are fitted on.")
    refine_max_size: int = Field(9, ge=2, description="Largest refined pool.")
    refine_tol: float = Field(1e-3, ge=0, description="Stop refining when the best relative gain is below this.")
    mixture_finetune_minutes: float = Field(
        2.0, ge=0, description="Wall-clock upper bound of the mixture's conservative fine-tuning (flagged when hit)."
    )
    mixture_finetune_epochs: int = Field(3, ge=0, description="Fine-tuning epochs of the mixture.")
    mixture_finetune_frames: int = Field(20, ge=1, description="Training frames (one per step) per fine-tuning epoch.")
    adaptive: AdaptiveSettings | None = Field(
        None, description="The scale-conditioned model (trained, analysed, a deployment candidate); null to leave it out."
    )
    units: str = Field("kJ/mol/nm", description="Unit of every MAE in the report.")
    bootstrap: int = Field(1000, ge=10, description="Frame-bootstrap resamples for the 95% intervals.")
    threads: int | None = Field(None, description="torch CPU threads (default: torch's choice).")


BUILTIN_RUN_CONFIGS = {"default": "run.yaml", "quick": "run_quick.yaml", "paper": "run_paper.yaml", "amoeba": "run_amoeba.yaml"}


def load_run_config(source: str | Path | None, quick: bool = False) -> RunConfig:
    """A built-in run config (``default``, ``quick``, ``paper``; None: default, or quick) or a YAML file, validated."""
    if source is None:
        source = "quick" if quick else "default"
    if str(source) in BUILTIN_RUN_CONFIGS and not Path(source).exists():
        name = BUILTIN_RUN_CONFIGS[str(source)]
        text, where = resources.files("adascale.configs").joinpath(name).read_text(), f"built-in {name}"
    else:
        try:
            text, where = Path(source).read_text(), str(source)
        except OSError as exc:
            raise AdaScaleError(
                f"{source}: cannot read the run config ({exc.strerror}); built-in configs: {', '.join(BUILTIN_RUN_CONFIGS)}"
            ) from None
    try:
        return RunConfig.model_validate(yaml.safe_load(text) or {})
    except (ValidationError, yaml.YAMLError) as exc:
        raise AdaScaleError(f"{where}: invalid run config: {_problems(exc)}") from None


def _problems(exc: ValidationError | yaml.YAMLError) -> str:
    """A validation or YAML error on one line."""
    if isinstance(exc, ValidationError):
        messages = (f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        return "; ".join(message.lstrip(": ") for message in messages)
    return str(exc).replace("\n", " ")


def with_data(config: RunConfig, **settings) -> RunConfig:
    """``config`` on the user's frames (``DataSettings`` fields, e.g. from ``adascale run --data``), validated."""
    try:
        return config.model_copy(update={"data": DataSettings(**settings)})
    except ValidationError as exc:
        raise AdaScaleError(f"--data: {_problems(exc)}") from None


def run_pipeline(out: Path, config: RunConfig, console: Console | None = None) -> dict:
    """Run (or resume) every stage into ``out``; returns the report dictionary."""
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    set_threads(config.threads or None)  # 0, like None, leaves torch's choice
    with atomic_output(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    stages = StageRunner(out, console)
    data = out / "data"
    work = {
        **({"testbed": lambda: _generate(config, data / "frames.extxyz")} if config.data is None else {}),
        "split": (lambda: _split(data, config.split)) if config.data is None else (lambda: _prepare_data(config, data)),
        **{f"train_{a.name}": lambda a=a: _train(a.config, a.overrides, data, out / "branches" / a.name) for a in config.anchors},
        "predict": lambda: _predict_splits(out, config),
        "refine": lambda: _refine(out, config),
        "route": lambda: _route(out, config),
        "mixture": lambda: _mixture(out, config),
        **({} if config.adaptive is None else _adaptive_work(out, config, config.adaptive)),
        "deploy": lambda: _deploy(out, config),
        "report": lambda: _report(out, config, stages.timings),
    }
    stages.run_plan(stage_plan(config), work)
    return json.loads((out / REPORT_JSON).read_text())


def stage_plan(config: RunConfig) -> dict[str, Stage]:
    """The stages of ``run`` in order, each with every run setting its output depends on and the
    earlier stages whose files it reads: the one place a stage declares what its key holds.

    A training stage holds its resolved training config (so editing a config YAML it names
    retrains it). ``threads`` enters no stage: it changes speed, not results.
    """
    from adascale.deploy.fit_mixture import FEATURE_RADII_FRACTIONS
    from adascale.training.config import load_config

    stats = {"units": config.units, "bootstrap": config.bootstrap}  # every MAE and interval a stage reports
    trained = tuple(f"train_{a.name}" for a in config.anchors)
    adaptive = () if config.adaptive is None else ("train_adaptive", "adaptive_analysis")
    if config.data is None:
        first = {
            "testbed": Stage(config.testbed.model_dump()),
            "split": Stage({"split": list(config.split)}, after=("testbed",)),
        }
    else:  # the user's files by content, and the anchors (their cutoffs and energies are checked)
        first = {"split": Stage(_data_stage_settings(config))}
    return {
        **first,
        **{
            f"train_{a.name}": Stage(
                {"anchor": a.model_dump(), "resolved": load_config(a.config, a.overrides).model_dump(mode="json")},
                after=("split",),
            )
            for a in config.anchors
        },
        "predict": Stage({"route_train_frames": config.route_train_frames}, after=("split", *trained)),
        "refine": Stage({"max_size": config.refine_max_size, "tol": config.refine_tol, **stats}, after=("predict",)),
        "route": Stage(stats, after=("predict", "refine")),
        "mixture": Stage(
            {
                "train_frames": config.route_train_frames,
                "finetune_minutes": config.mixture_finetune_minutes,
                "finetune_epochs": config.mixture_finetune_epochs,
                "finetune_frames": config.mixture_finetune_frames,
                "feature_radii_fractions": list(FEATURE_RADII_FRACTIONS),  # of the largest branch cutoff
                **stats,
            },
            after=("split", *trained),
        ),
        **({} if config.adaptive is None else _adaptive_plan(config, config.adaptive, stats)),
        "deploy": Stage(stats, after=("split", "mixture", *trained, *adaptive[:1])),
        "report": Stage(stats, after=("predict", "refine", "route", "mixture", "deploy", *adaptive)),
    }


def _adaptive_plan(config: RunConfig, adaptive: AdaptiveSettings, stats: dict) -> dict[str, Stage]:
    """The scale-conditioned model's stages: trunk, router phase, its scale analysis."""
    from adascale.training.config import load_config

    trunk = load_config(adaptive.config, adaptive.trunk_overrides).model_dump(mode="json")
    router = load_config(adaptive.config, adaptive.router_overrides).model_dump(mode="json")
    refine = {"max_size": config.refine_max_size, "tol": config.refine_tol}
    return {
        "train_adaptive_trunk": Stage(
            {"settings": adaptive.model_dump(include={"name", "config", "trunk_overrides"}), "resolved": trunk}, after=("split",)
        ),
        "train_adaptive": Stage({"resolved": router}, after=("train_adaptive_trunk",)),
        "adaptive_analysis": Stage({**refine, **stats, "grid_points": adaptive.grid_points}, after=("train_adaptive",)),
    }


def _generate(config: RunConfig, path: Path) -> None:
    from adascale.data.testbed import NaClSettings, generate_nacl

    path.parent.mkdir(parents=True, exist_ok=True)
    generate_nacl(NaClSettings(**config.testbed.model_dump()), path)


def _data_stage_settings(config: RunConfig) -> dict:
    """The ``split`` stage's key for the user's data: its settings and each file's SHA-256 (not its path)."""
    settings = config.data.model_dump(exclude={"file", "train", "valid", "test"})
    settings["sha256"] = {role: file_sha256(path) for role, path in config.data.sources().items()}
    settings["anchors"] = [anchor.model_dump() for anchor in config.anchors]
    return settings


def _prepare_data(config: RunConfig, data: Path) -> None:
    """Read, check and split the user's frames into ``data/{train,valid,test}.extxyz``; refuse, before any
    training, a set too small for the split, frames without forces, absent ion species, untrained species,
    cells too small for an anchor's cutoff, and missing energies that an anchor trains on."""
    from adascale.data.frames import write_frames
    from adascale.data.split import split_frames

    settings = config.data
    hashes = _data_stage_settings(config)["sha256"]
    ions = ion_numbers(settings.ion_species)
    keys = {"forces_key": settings.forces_key, "energy_key": settings.energy_key}
    files = {role: read_frames(path, **keys) for role, path in settings.sources().items()}
    sources = settings.sources()
    where = " + ".join(str(path) for path in sources.values())
    check_ion_species([frame for frames in files.values() for frame in frames], ions, where=where)
    anchors = [_anchor_settings(anchor) for anchor in config.anchors]
    cutoff = max(anchor.model.cutoff for anchor in anchors)
    needs_energy = [a.name for a, s in zip(config.anchors, anchors) if s.training.energy_weight > 0]
    for role, frames in files.items():
        for index, frame in enumerate(frames):
            check_cutoff(frame, cutoff, path=sources[role], index=index)
            if needs_energy and frame.energy is None:
                raise AdaScaleError(
                    f"{sources[role]}: frame {index}: field {settings.energy_key!r}: no energy, and anchor(s) "
                    f"{', '.join(needs_energy)} train on energies (set training.energy_weight=0 in their overrides)"
                )
    if "all" in files:
        counts = split_counts(len(files["all"]), settings.split, path=sources["all"])
        blocks = dict(zip(SPLITS, split_frames(files["all"], counts)))
    else:
        blocks = files
    check_split_species(blocks, where=where)
    for name, block in blocks.items():
        write_frames(data / f"{name}.extxyz", block)
    source = {
        "files": [{"role": role, "path": str(path), "sha256": hashes[role]} for role, path in sources.items()],
        "frames": {name: len(block) for name, block in blocks.items()},
        "ion_species": settings.ion_species,
        "forces_key": settings.forces_key,
        "energy_key": settings.energy_key,
    }
    write_json(data / SOURCE_JSON, source)


def _anchor_settings(anchor: AnchorSettings):
    from adascale.training.config import load_config

    return load_config(anchor.config, anchor.overrides)


def _ion_species(config: RunConfig) -> tuple[int, ...]:
    """Atomic numbers of the run's ion species (the data's, else Na and Cl)."""
    return DEFAULT_ION_SPECIES if config.data is None else ion_numbers(config.data.ion_species)


def _split(data: Path, sizes: tuple[int, int, int]) -> None:
    from adascale.data.frames import write_frames
    from adascale.data.split import split_frames

    frames = read_frames(data / "frames.extxyz")
    (data / SOURCE_JSON).unlink(missing_ok=True)  # left by an earlier `data:` run in this directory
    for name, block in zip(SPLITS, split_frames(frames, list(sizes))):
        write_frames(data / f"{name}.extxyz", block)


def _train(config_name: str, overrides: list[str], data: Path, directory: Path) -> None:
    from adascale.training.checkpoint import CHECKPOINT_FILE
    from adascale.training.config import load_config
    from adascale.training.trainer import Trainer

    settings = load_config(config_name, overrides)
    keys = {"forces_key": settings.training.forces_key, "energy_key": settings.training.energy_key}
    trainer = Trainer(settings, read_frames(data / "train.extxyz", **keys), read_frames(data / "valid.extxyz", **keys), directory)
    if (directory / CHECKPOINT_FILE).exists():
        trainer.resume()  # a killed run continues where its last checkpoint left it
    trainer.run()


def predictions_for(
    branch_dirs: list[Path], frames: list[Frame], path: Path, names: list[str], ion_species: tuple[int, ...] = DEFAULT_ION_SPECIES
) -> PredictionSet:
    """The anchors' PredictionSet on labelled ``frames``, with router features attached (``ion_species`` give d_ion)."""
    from adascale.models.features import FeatureSpec
    from adascale.models.inference import model_forces, predict
    from adascale.scales.features import attach_router_features

    outputs = [model_forces(directory, frames, path=path) for directory in branch_dirs]
    predictions = predict(frames, outputs, path=path, metadata={"data": str(path), "ion_species": list(ion_species)})
    predictions.branch_names = names
    species = sorted({int(z) for frame in frames for z in np.unique(frame.numbers)})
    attach_router_features(predictions, frames, FeatureSpec(species=tuple(species), ion_species=ion_species), path=path)
    return predictions


def _branch_dirs(out: Path, config: RunConfig) -> list[Path]:
    return [out / "branches" / anchor.name for anchor in config.anchors]


def _predict_splits(out: Path, config: RunConfig) -> None:
    from adascale.deploy.fit_mixture import evenly_spaced

    names = [anchor.name for anchor in config.anchors]
    for split in SPLITS:
        path = out / "data" / f"{split}.extxyz"
        frames = read_frames(path)
        if split == "train":
            frames = evenly_spaced(frames, config.route_train_frames)
        predictions = predictions_for(_branch_dirs(out, config), frames, path, names, _ion_species(config))
        predictions.save(out / "predictions" / f"{split}.npz")


def _load_predictions(out: Path, split: str) -> PredictionSet:
    return PredictionSet.load(out / "predictions" / f"{split}.npz")


def _refine(out: Path, config: RunConfig) -> None:
    from adascale.scales.analysis import refine

    report = refine(
        _load_predictions(out, "test"),
        fit=_load_predictions(out, "valid"),
        fit_label="validation set",
        max_size=config.refine_max_size,
        tol=config.refine_tol,
        units=config.units,
        n_resamples=config.bootstrap,
    )
    write_json(out / "refine.json", report)


def _route(out: Path, config: RunConfig) -> None:
    from adascale.scales.router_report import route, save_routers

    pool = json.loads((out / "refine.json").read_text())["refinement"]["final"]
    report, fits, selected = route(
        _load_predictions(out, "train"),
        _load_predictions(out, "valid"),
        _load_predictions(out, "test"),
        pool=pool,
        units=config.units,
        n_resamples=config.bootstrap,
    )
    save_routers(out / "routers", fits, selected)
    write_json(out / "route.json", report)


def _mixture(out: Path, config: RunConfig) -> None:
    from adascale.deploy.fit_mixture import MixtureSettings, fit_mixture
    from adascale.models.base import Branch
    from adascale.models.io import load_model, save_model

    settings = MixtureSettings(
        train_frames=config.route_train_frames,
        finetune_minutes=config.mixture_finetune_minutes,
        finetune_epochs=config.mixture_finetune_epochs,
        finetune_frames=config.mixture_finetune_frames,
    )
    branches = [load_model(directory, expect=Branch) for directory in _branch_dirs(out, config)]
    frames = {split: read_frames(out / "data" / f"{split}.extxyz") for split in SPLITS}
    scales = PredictionSet.default_scales(len(branches))
    mixture, report = fit_mixture(
        branches,
        scales,
        frames["train"],
        frames["valid"],
        frames["test"],
        settings=settings,
        units=config.units,
        n_resamples=config.bootstrap,
        ion_species=_ion_species(config),
    )
    save_model(out / "mixture", mixture)
    write_json(out / "mixture.json", report)


def _adaptive_work(out: Path, config: RunConfig, adaptive: AdaptiveSettings) -> dict:
    data, trunk = out / "data", out / "branches" / f"{adaptive.name}_trunk"
    return {
        "train_adaptive_trunk": lambda: _train(adaptive.config, adaptive.trunk_overrides, data, trunk),
        "train_adaptive": lambda: _train_router_phase(out, adaptive, trunk),
        "adaptive_analysis": lambda: _adaptive_analysis(out, config, adaptive),
    }


def _train_router_phase(out: Path, adaptive: AdaptiveSettings, trunk: Path) -> None:
    """The router phase, from the trunk's weights and its best single scale on validation."""
    from adascale.models.io import load_model
    from adascale.scales.conditioned import grid_predictions
    from adascale.scales.oracles import anchor_errors, best_global_scale

    valid = grid_predictions(load_model(trunk), read_frames(out / "data" / "valid.extxyz"))
    start = best_global_scale(anchor_errors(valid), valid.scales)[0]
    derived = ["model.scale.mode=router", f"model.scale.fixed_scale={start:.6f}", f"training.init_from={trunk}"]
    _train(adaptive.config, [*adaptive.router_overrides, *derived], out / "data", out / "branches" / adaptive.name)


def _adaptive_analysis(out: Path, config: RunConfig, adaptive: AdaptiveSettings) -> None:
    from adascale.models.io import load_model
    from adascale.scales.conditioned import analyze_conditioned

    valid, test = (read_frames(out / "data" / f"{split}.extxyz") for split in ("valid", "test"))
    report = analyze_conditioned(
        load_model(out / "branches" / adaptive.name),
        valid,
        test,
        grid=np.linspace(0.0, 1.0, adaptive.grid_points).tolist(),
        ion_species=_ion_species(config),
        units=config.units,
        n_resamples=config.bootstrap,
        max_size=config.refine_max_size,
        tol=config.refine_tol,
    )
    write_json(out / ADAPTIVE_JSON, report)


def deployment_candidates(out: Path, config: RunConfig) -> dict[str, Path]:
    """Every model of a run that may be deployed: the fixed branches and the adaptive models."""
    candidates = {anchor.name: out / "branches" / anchor.name for anchor in config.anchors}
    candidates["mixture"] = out / "mixture"
    if config.adaptive is not None:
        candidates[config.adaptive.name] = out / "branches" / config.adaptive.name
    return candidates


def _deploy(out: Path, config: RunConfig) -> None:
    """Score every candidate on validation, copy the best (all-atom force MAE) to ``out/deployed``,
    and report it on test."""
    from adascale.models.io import MODEL_FILE, WEIGHTS_FILE, load_model
    from adascale.scales.evaluate import losses_entry, sample_losses

    valid, test = (read_frames(out / "data" / f"{split}.extxyz") for split in ("valid", "test"))
    ions = _ion_species(config)
    candidates = deployment_candidates(out, config)
    scores = {
        name: losses_entry(
            sample_losses(load_model(directory), valid), valid, units=config.units, n_resamples=config.bootstrap, ion_species=ions
        )
        for name, directory in candidates.items()
    }
    chosen = min(scores, key=lambda name: scores[name]["all"])
    staging, target = out / ".deployed.tmp", out / DEPLOYED_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name in (MODEL_FILE, WEIGHTS_FILE):
        shutil.copy2(candidates[chosen] / name, staging / name)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    losses = sample_losses(load_model(target), test)
    np.save(out / "deployed_test_losses.npy", losses)
    deployed = losses_entry(losses, test, units=config.units, n_resamples=config.bootstrap, ion_species=ions, model=chosen)
    selection = {name: {subset: entry[subset] for subset in SUBSETS} for name, entry in scores.items()}
    write_json(
        out / DEPLOY_JSON, {"model": chosen, "chosen_on": "validation force MAE, all atoms", "valid": selection, "test": deployed}
    )


def _report(out: Path, config: RunConfig, timings: dict[str, float]) -> None:
    """Merge the stage reports into report.json / report.md and draw the plots."""
    report = json.loads((out / "route.json").read_text())
    refined = json.loads((out / "refine.json").read_text())
    mixture = json.loads((out / "mixture.json").read_text())
    report["refinement"] = refined["refinement"]
    for name in MIXTURE_METHODS:
        report["methods"][name] = mixture["methods"][name]
    report["mixture"] = mixture["mixture"]
    report["training"] = training_outcomes(out, config, mixture["mixture"]["finetune"])
    if config.adaptive is not None:
        add_adaptive(report, json.loads((out / ADAPTIVE_JSON).read_text()), config.adaptive.name)
    deploy = json.loads((out / DEPLOY_JSON).read_text())
    report["methods"]["deployed"] = deploy["test"]
    report["deployed"] = {key: deploy[key] for key in ("model", "chosen_on", "valid")}
    if (out / "data" / SOURCE_JSON).exists():
        report["data"] = json.loads((out / "data" / SOURCE_JSON).read_text())
    test = _load_predictions(out, "test")
    losses = _router_losses(out / "routers", test) | {"deployed": np.load(out / "deployed_test_losses.npy")}
    finish_report(report, test, losses, out, timings)


def add_adaptive(report: dict, adaptive: dict, name: str) -> None:
    """The scale-conditioned model in a run report: ``<name>`` (its router, deployable) and
    ``<name>_best_s`` (all atoms at its best single scale: the control without adaptivity), plus
    its own scale analysis under ``report[name]``."""
    methods = adaptive["methods"]
    report["methods"][name] = methods["router"]
    report["methods"][f"{name}_best_s"] = methods["best_global_s"]
    report[name] = {
        "methods": methods,
        "refinement": adaptive["refinement"],
        "scale_distribution": adaptive["scale_distribution"],
    }


def training_outcomes(out: Path, config: RunConfig, finetune: dict) -> dict[str, dict]:
    """How each anchor's training and the mixture fine-tune ended (steps, stopped, ``budget_hit``:
    the wall-clock upper bound cut it, so its numbers depend on the machine's load)."""
    from adascale.training.loop import OUTCOME_KEYS
    from adascale.training.trainer import METRICS_FILE

    directories = dict(zip((anchor.name for anchor in config.anchors), _branch_dirs(out, config)))
    if config.adaptive is not None:
        name = config.adaptive.name
        directories |= {f"{name}_trunk": out / "branches" / f"{name}_trunk", name: out / "branches" / name}
    outcomes = {}
    for name, directory in directories.items():
        training = json.loads((directory / METRICS_FILE).read_text())["training"]
        outcomes[name] = {key: training.get(key) for key in OUTCOME_KEYS}
    outcomes["mixture_finetune"] = finetune
    return outcomes


def _router_losses(directory: Path, test: PredictionSet) -> dict[str, np.ndarray]:
    """Per-sample losses (N,) of the saved routers on ``test``: router_hard, router_soft, router."""
    from adascale.scales.router_report import load_selected_router
    from adascale.scales.routers import KINDS, Router

    losses = {router_name(kind): Router.load(directory / kind).sample_loss(test) for kind in KINDS}
    losses[ROUTER] = load_selected_router(directory).sample_loss(test)
    return losses


def finish_report(
    report: dict,
    test: PredictionSet,
    extra_losses: dict[str, np.ndarray],
    out: Path,
    timings: dict[str, float] | None = None,
) -> None:
    """Add the distance and species breakdowns (scale methods plus ``extra_losses`` (N,) eV/Å),
    the deployment table and the plots; write report.json and report.md into ``out``."""
    from adascale.report.markdown import render_markdown
    from adascale.report.plots import write_plots
    from adascale.scales.analysis import breakdown, method_losses

    per_sample = method_losses(test, report["methods"]) | extra_losses
    report.update(breakdown(test, per_sample, units=report["units"], n_resamples=report["settings"]["bootstrap"]["resamples"]))

    report["deployment"] = [
        {"mode": "per-atom force mixing (paper)", "method": ROUTER, "conservative": False},
        {"mode": "per-atom force mixing, mixture weights", "method": MIXTURE_FORCE_MIXING, "conservative": False},
        {"mode": "conservative energy mixture (MD)", "method": MIXTURE, "conservative": True},
    ]
    report["deployment"] = [item for item in report["deployment"] if item["method"] in report["methods"]]
    if timings:
        report["timings_s"] = timings
    report["plots"] = {name: f"{PLOTS_DIR}/{file}" for name, file in write_plots(report, out / PLOTS_DIR).items()}
    write_json(out / REPORT_JSON, report)
    with atomic_output(out / REPORT_MD) as tmp:
        tmp.write_text(render_markdown(report))


def evaluate_run(run_dir: Path, data: Path, *, forces_key: str = "REF_forces", energy_key: str = "REF_energy") -> dict:
    """Apply a finished run (branches, refined pool, routers, mixture, the scale-conditioned model and
    the deployed model) to labelled frames in ``data``.

    ``best_global_s`` stays the one fitted on the run's validation set and the pool is the run's
    refined pool; nothing is fitted on the new frames. Frames with species the run never saw,
    or cells too small for a branch, raise AdaScaleError naming the file and frame.
    """
    from adascale.deploy.fit_mixture import evaluate_frames
    from adascale.models.io import load_model
    from adascale.scales.analysis import analyze
    from adascale.scales.evaluate import sample_losses
    from adascale.scales.router_report import add_methods

    marker = run_dir / ".stages" / "report.json"
    if not marker.exists():
        raise AdaScaleError(f"{run_dir}: not a finished `adascale run` directory (no completed report stage)")
    config = load_run_config(run_dir / "config.yaml")
    frames = read_frames(data, forces_key=forces_key, energy_key=energy_key)
    names = [anchor.name for anchor in config.anchors]
    test = predictions_for(_branch_dirs(run_dir, config), frames, data, names, _ion_species(config))
    pool = json.loads((run_dir / "refine.json").read_text())["refinement"]["final"]
    report = analyze(
        test,
        fit=_load_predictions(run_dir, "valid"),
        fit_label=f"validation set of {run_dir}",
        pool=pool,
        units=config.units,
        n_resamples=config.bootstrap,
    )
    router_losses = _router_losses(run_dir / "routers", test)
    _, mixed = evaluate_frames(load_model(run_dir / "mixture"), frames)
    losses = router_losses | {MIXTURE: np.abs(mixed - test.ref).mean(axis=1)}
    losses["deployed"] = sample_losses(load_model(run_dir / DEPLOYED_DIR), frames, path=data)
    if config.adaptive is not None:
        losses[config.adaptive.name] = sample_losses(load_model(run_dir / "branches" / config.adaptive.name), frames, path=data)
    add_methods(report, test, losses, n_resamples=config.bootstrap)
    report["methods"]["deployed"]["model"] = json.loads((run_dir / DEPLOY_JSON).read_text())["model"]
    report["refinement"] = json.loads((run_dir / "refine.json").read_text())["refinement"]
    report["settings"]["evaluated"] = {"run": str(run_dir), "data": str(data)}
    return report
