"""The training configuration: a YAML file validated by pydantic, with command-line overrides.

Two blocks, ``model`` (the branch architecture) and ``training`` (optimisation, data, stopping).
Every field carries a description (``adascale train --show-settings`` prints them). Built-in
configs live in ``adascale/configs/``: ``local`` (anchor s=0, PaiNN at 3.5 Å) and
``long_range`` (anchor s=1, PaiNN at 6.0 Å plus learned-charge electrostatics).
Overrides are dotted keys with YAML values, e.g. ``model.cutoff=4.0`` or
``training.time_budget_minutes=null``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adascale.errors import AdaScaleError
from adascale.training.loop import LoopSettings

BUILTIN_CONFIGS = ("local", "long_range", "scale_conditioned")
SettingsT = TypeVar("SettingsT", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ElectrostaticsSettings(_Strict):
    """Learned charges and their Coulomb energy (present only in the long-range branch)."""

    method: Literal["ewald", "pme"] = Field(
        "pme",
        description="torch-pme sum for periodic cells: 'pme' (mesh; forces within ~1e-3 eV/Å, ~50x faster on the testbed) or 'ewald' (exact to ~1e-7).",
    )
    exclusion_inner: float = Field(
        2.0, gt=0, description="Å: pairs closer than this get no Coulomb energy (the local model covers them)."
    )
    exclusion_outer: float = Field(
        3.0, gt=0, description="Å: Coulomb is fully on beyond this; smooth (C2) switch in between. At most the cutoff."
    )
    total_charge: float = Field(0.0, description="e: every frame's charges sum to exactly this.")
    charge_fit_bonded_below: float | None = Field(
        1.7,
        gt=0,
        description="Å: start from per-species charges fitted to the training forces (least squares, pairs closer "
        "than this treated as bonded and left out); null starts from zero charges.",
    )


class RepulsionSettings(_Strict):
    """A pair wall below the closest distance of each species pair in the training frames
    (:mod:`adascale.models.repulsion`): zero on every training configuration, it keeps MD from
    driving molecules into each other where the network has seen no data."""

    energy: float = Field(
        1.0, gt=0, description="eV: the wall's energy per pair at `width` inside its onset (cubic in the depth)."
    )
    width: float = Field(0.2, gt=0, description="Å: the depth at which a pair's wall energy reaches `energy`.")
    margin: float = Field(
        0.0, ge=0, description="Å: onsets this far below the closest training distance of each pair (0: at it)."
    )


class ScaleSettings(_Strict):
    """A per-atom, differentiable scale inside the model (the scale-conditioned branch; needs electrostatics).

    Atom i reads its atomic basis to r_i = min_radius + s_i (cutoff - min_radius) and its
    Coulomb energy is gated by s_i (:mod:`adascale.models.scale_conditioned`).
    """

    min_radius: float = Field(
        3.5, gt=0, description="Å: the radius at s = 0 (cutoff is the radius at s = 1); at least interaction_cutoff."
    )
    mode: Literal["random", "router", "fixed"] = Field(
        "random",
        description="Where s comes from in training: 'random' (per-frame patterns of random scales: trains the trunk "
        "for every s), 'router' (a label-free MLP of geometric features, trained through the force loss), 'fixed'.",
    )
    fixed_scale: float = Field(
        1.0, ge=0, le=1, description="The scale of mode 'fixed', of 'random' in evaluation, and where the router starts."
    )
    router_radii: list[float] = Field(
        [3.0, 4.5, 6.0], description="Å: coordination radii of the router's features (at most cutoff)."
    )
    router_hidden: list[int] = Field([32, 32], description="Widths of the router MLP.")
    embedding: int = Field(8, ge=1, description="Cosine features cos(k pi s) embedding the scale into the trunk.")


class ModelSettings(_Strict):
    """The branch: PaiNN message passing, optionally with electrostatics and a per-atom scale."""

    cutoff: float = Field(3.5, gt=0, description="Å: the largest neighbour distance the branch reads (its spatial scale).")
    features: int = Field(64, ge=2, description="Channels of the scalar and vector features.")
    interactions: int = Field(
        2,
        ge=0,
        description="PaiNN message-passing layers after the atomic-basis layer; receptive field cutoff + interactions x interaction_cutoff.",
    )
    interaction_cutoff: float | None = Field(
        None, gt=0, description="Å: radius of the message-passing layers (at most cutoff); null means cutoff."
    )
    radial_basis: int = Field(8, ge=1, description="Bessel functions encoding each edge length.")
    envelope_exponent: int = Field(
        6, ge=2, description="Exponent p of the polynomial cutoff envelope (smooth to 2nd derivative)."
    )
    electrostatics: ElectrostaticsSettings | None = Field(
        None, description="Learned charges + Ewald/Coulomb (the long-range branch); null for a purely local branch."
    )
    scale: ScaleSettings | None = Field(
        None, description="A per-atom scale inside the model (the scale-conditioned branch); null for a fixed-scale branch."
    )
    repulsion: RepulsionSettings | None = Field(
        default_factory=RepulsionSettings,
        description="Pair wall below the closest training distance of each species pair (MD stability); null: none.",
    )

    @model_validator(mode="after")
    def _radii_within_cutoff(self) -> ModelSettings:
        if self.interaction_cutoff is not None and self.interaction_cutoff > self.cutoff:
            raise ValueError(f"interaction_cutoff ({self.interaction_cutoff}) must not exceed cutoff ({self.cutoff})")
        e = self.electrostatics
        if e is not None and not e.exclusion_inner < e.exclusion_outer <= self.cutoff:
            raise ValueError(
                f"need exclusion_inner ({e.exclusion_inner}) < exclusion_outer ({e.exclusion_outer}) <= cutoff ({self.cutoff})"
            )
        if self.scale is not None and e is None:
            raise ValueError("a scale block needs an electrostatics block (s = 1 is the long-range branch)")
        return self

    def branch_kwargs(self) -> dict:
        """Constructor arguments for :func:`adascale.models.io.build_model` (species, statistics and the
        repulsion's onsets added by the trainer)."""
        kwargs = self.model_dump(exclude={"electrostatics", "scale", "repulsion"})
        if self.electrostatics is None:
            return {"kind": "painn", **kwargs}
        e = self.electrostatics
        kwargs |= {
            "kind": "painn_long_range",
            "electrostatics": e.method,
            "exclusion_inner": e.exclusion_inner,
            "exclusion_outer": e.exclusion_outer,
            "total_charge": e.total_charge,
        }
        if self.scale is None:
            return kwargs
        c = self.scale
        return kwargs | {
            "kind": "scale_conditioned",
            "min_radius": c.min_radius,
            "scale_mode": c.mode,
            "fixed_scale": c.fixed_scale,
            "router_radii": c.router_radii,
            "router_hidden": c.router_hidden,
            "scale_embedding": c.embedding,
        }


class TrainingSettings(LoopSettings):
    """Optimisation, data keys and stopping rules: the training loop's settings (inherited) plus the
    data and the loss of a branch."""

    dtype: Literal["float32", "float64"] = Field("float32", description="Floating-point precision of the model and data.")
    forces_key: str = Field("REF_forces", description="Per-atom array holding reference forces (eV/Å); 'forces' is the fallback.")
    energy_key: str = Field(
        "REF_energy", description="Per-frame value holding reference energies (eV); 'energy' is the fallback."
    )
    force_loss: Literal["mse", "l1", "huber"] = Field("mse", description="Per-component force loss.")
    huber_delta: float = Field(0.1, gt=0, description="eV/Å: the Huber loss is quadratic below this error, linear above.")
    species_force_weights: dict[int, float] = Field(
        default_factory=dict,
        description="Force-loss weight per atomic number (others 1), e.g. {11: 4, 17: 4} to emphasise rare ions.",
    )
    energy_weight: float = Field(
        0.0, ge=0, description="Weight of the per-atom energy MSE (eV^2) added to the force loss; 0 trains on forces only."
    )
    stress_key: str = Field(
        "REF_stress", description="Per-frame 3x3 (or 6 Voigt) stress, eV/Å³, ASE's sign; 'stress' is the fallback."
    )
    stress_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of the stress loss: MSE over the 9 components of the virial per atom (stress x volume / "
        "atoms, eV^2, the units of the energy MSE), on frames with a stress label in a 3D-periodic cell (the others "
        "train on forces and energy; metrics.json counts them); 0: no stress term, no strain graph.",
    )


class TrainConfig(_Strict):
    """Everything `adascale train` needs besides the data files."""

    model: ModelSettings = Field(default_factory=ModelSettings, description="The branch architecture.")
    training: TrainingSettings = Field(default_factory=TrainingSettings, description="Optimisation and stopping.")


def load_config(source: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a built-in config name or a YAML path (None: all defaults), apply ``key=value`` overrides, validate.

    Any problem becomes one AdaScaleError line naming the source and the field.
    """
    raw, where = _read_source(source)
    return validated(TrainConfig, raw, overrides, where=f"{where}: invalid config")


def config_to_yaml(config: TrainConfig) -> str:
    """The full resolved config as YAML (what a model directory records)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def describe_settings(settings: type[BaseModel] = TrainConfig) -> str:
    """Every field of ``settings`` with its default and description, one per line, for ``--show-settings``."""
    lines = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            nested = _nested_model(field.annotation)
            if nested is not None:
                lines.append(f"{key}: {field.description}")
                walk(nested, key + ".")
            else:
                lines.append(f"{key} (default {field.get_default(call_default_factory=True)!r}): {field.description}")

    walk(settings, "")
    return "\n".join(lines)


def settings_with_overrides(settings: type[SettingsT], overrides: list[str] | tuple[str, ...]) -> SettingsT:
    """``settings`` (a pydantic model) at its defaults with ``key=value`` ``overrides`` (``--set``), validated."""
    return validated(settings, {}, overrides, where="--set: invalid settings")


def validated(settings: type[SettingsT], raw: dict, overrides: list[str] | tuple[str, ...] = (), *, where: str) -> SettingsT:
    """``raw`` with ``key=value`` ``overrides`` applied, validated as ``settings``; any problem is one
    AdaScaleError line, ``where: field.path: message; ...`` (every settings loader goes through here)."""
    for item in overrides:
        apply_override(raw, item)
    try:
        return settings.model_validate(raw)
    except ValidationError as exc:
        raise AdaScaleError(f"{where}: {validation_problems(exc)}") from None


def validation_problems(exc: ValidationError) -> str:
    """A pydantic validation error on one line: ``field.path: message; ...``."""
    messages = (f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
    return "; ".join(message.lstrip(": ") for message in messages)


def _nested_model(annotation) -> type[BaseModel] | None:
    candidates = getattr(annotation, "__args__", (annotation,))
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def _read_source(source: str | Path | None) -> tuple[dict, str]:
    if source is None:
        return {}, "defaults"
    if str(source) in BUILTIN_CONFIGS:
        text = resources.files("adascale.configs").joinpath(f"{source}.yaml").read_text()
        where = f"built-in config {source!r}"
    else:
        path = Path(source)
        if not path.is_file():
            raise AdaScaleError(f"{path}: no such config file (built-in configs: {', '.join(BUILTIN_CONFIGS)})")
        text, where = path.read_text(), str(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AdaScaleError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is None:
        return {}, where
    if not isinstance(raw, dict):
        raise AdaScaleError(f"{where}: the config must be a mapping with 'model' and 'training' blocks")
    return raw, where


def apply_override(raw: dict, item: str) -> None:
    """Set the dotted ``key=value`` ``item`` (a YAML value) in the raw settings ``raw``, creating blocks on the way."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise AdaScaleError(f"override {item!r} must look like key=value, e.g. model.cutoff=4.0")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise AdaScaleError(f"override {item!r}: the value is not valid YAML") from None
    *parents, leaf = key.strip().split(".")
    node = raw
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise AdaScaleError(f"override {item!r}: {part!r} is not a block of settings")
        node = child
    node[leaf] = value
