"""The run config of ``adascale run``: one pydantic schema, and the default run as its one source of values.

Every run config is the built-in default run (``adascale/configs/run.yaml``) with a YAML file,
or a mapping, merged onto it: blocks merge key by key, anything else (a value, a list, ``null``)
replaces. So a partial YAML gets the default run's values, and ``--config default`` is run.yaml
itself. The schema below has no defaults of its own for what run.yaml sets; the settings of the
mixture (:class:`~adascale.training.mixture.MixtureSettings`) and of the user's data
(:class:`~adascale.data.user_data.DataSettings`) carry their own, which the default run uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adascale.data.regimes import DEFAULT_ION_SPECIES
from adascale.data.testbed import NaClSettings
from adascale.data.user_data import DataSettings, ion_numbers
from adascale.errors import AdaScaleError
from adascale.layout import seed_model_name
from adascale.scales.metrics import ReportContext
from adascale.training.config import validated, validation_problems
from adascale.training.mixture import MixtureSettings
from adascale.validate.settings import ValidateSettings

BUILTIN_RUN_CONFIGS = {"default": "run.yaml", "quick": "run_quick.yaml", "paper": "run_paper.yaml", "amoeba": "run_amoeba.yaml"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AnchorSettings(_Strict):
    """One anchor branch: a training config (built-in name or YAML path) and overrides."""

    name: str = Field(description="Directory name under branches/ and the branch's name in reports.")
    config: str = Field(description="Built-in training config (local, long_range) or a YAML path.")
    overrides: list[str] = Field(default_factory=list, description="`key=value` overrides, as `adascale train --set`.")
    seeds: int = Field(
        1,
        ge=1,
        description="Models trained, seed k with training.seed = the config's seed + k; seed 0 is the anchor of the "
        "scale analysis, routers and mixture, the others give its seed-to-seed spread and the seed null.",
    )

    def model_names(self) -> list[str]:
        """Every seed's model name, seed 0 (the anchor's own name) first."""
        return [seed_model_name(self.name, seed) for seed in range(self.seeds)]

    def seed_overrides(self, seed: int) -> list[str]:
        """The overrides that train seed ``seed``: the anchor's, then ``training.seed`` (seed 0: the anchor's own)."""
        if seed == 0:
            return list(self.overrides)
        from adascale.training.config import load_config

        base = load_config(self.config, self.overrides).training.seed
        return [*self.overrides, f"training.seed={base + seed}"]


class AdaptiveSettings(_Strict):
    """The scale-conditioned model: its trunk trained at random per-atom scales, then its label-free router.

    The router phase starts from the trunk's weights with every atom at the trunk's best single
    scale on validation (the control), and moves the scales through the force loss.
    """

    name: str = Field(description="Directory name under branches/ and the model's name in reports.")
    config: str = Field(description="Training config of both phases (built-in name or YAML path).")
    trunk_overrides: list[str] = Field(default_factory=list, description="`key=value` overrides of the trunk phase.")
    router_overrides: list[str] = Field(default_factory=list, description="`key=value` overrides of the router phase.")
    grid_points: int = Field(
        ge=2, description="Scales 0, 1/(n-1), ..., 1 at which the scale analysis evaluates the model (valid and test)."
    )


class RunValidation(ValidateSettings):
    """``adascale validate`` of the deployed model at the end of the run (state, protocol, threads),
    from one frame of the run's test set."""

    frame: int = Field(0, description="Index of the test frame both MD runs (model and reference) start from.")


class RunConfig(_Strict):
    """Everything ``adascale run`` does; its values come from ``adascale/configs/run.yaml`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)  # YAML says `validate:`, Python `validation`

    testbed: NaClSettings = Field(
        description="The NaCl(aq) testbed: `adascale generate nacl`'s settings (adascale.data.testbed.NaClSettings)."
    )
    data: DataSettings | None = Field(None, description="Your own labelled frames instead of the testbed (and `split`).")
    split: tuple[int, int, int] = Field(description="Contiguous train/valid/test frame counts of the testbed.")
    anchors: list[AnchorSettings] = Field(min_length=2, description="Anchors, shortest range first (scales 0 .. 1).")
    route_train_frames: int = Field(ge=1, description="Training frames (evenly spaced) the routers are fitted on.")
    refine_max_size: int = Field(ge=2, description="Largest refined pool.")
    refine_tol: float = Field(ge=0, description="Stop refining when the best relative gain is below this.")
    mixture: MixtureSettings = Field(default_factory=MixtureSettings, description="The conservative mixture's fit.")
    adaptive: AdaptiveSettings | None = Field(
        description="The scale-conditioned model (trained, analysed, a deployment candidate); null to leave it out."
    )
    null_anchor: str | None = Field(
        description="The anchor whose seeds 0 and 1 form the seed null of the scale analysis; null: the "
        "longest-range anchor with at least 2 seeds (no seed null when none has)."
    )
    validation: RunValidation | None = Field(
        alias="validate",
        description="MD observables of the deployed model against the reference force field "
        "(`adascale validate`; its table goes into the report); null to skip.",
    )
    units: str = Field(description="Unit of every MAE in the report.")
    bootstrap: int = Field(ge=10, description="Frame-bootstrap resamples for the 95% intervals.")
    threads: int | None = Field(description="torch CPU threads per process (null: torch's choice).")

    @model_validator(mode="after")
    def _names_and_null_anchor(self) -> RunConfig:
        names = [name for anchor in self.anchors for name in anchor.model_names()]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"anchors: model names repeat: {', '.join(repeated)} (seed k of anchor A is named A_seed<k>)")
        seeded = [anchor.name for anchor in self.anchors if anchor.seeds >= 2]
        if self.null_anchor is not None and self.null_anchor not in seeded:
            raise ValueError(
                f"null_anchor: {self.null_anchor!r} is not an anchor with at least 2 seeds (those: {', '.join(seeded) or 'none'})"
            )
        return self

    def seeded_anchors(self) -> list[AnchorSettings]:
        """The anchors that train several seeds (their seed-aware intervals), shortest range first."""
        return [anchor for anchor in self.anchors if anchor.seeds >= 2]

    def seed_null_anchor(self) -> AnchorSettings | None:
        """The anchor of the seed null: ``null_anchor``, else the longest-range anchor with >= 2 seeds."""
        seeded = self.seeded_anchors()
        if self.null_anchor is not None:
            return next(anchor for anchor in seeded if anchor.name == self.null_anchor)
        return seeded[-1] if seeded else None

    def ion_species(self) -> tuple[int, ...]:
        """Atomic numbers of the run's ion species (the data's, else Na and Cl): d_i and the report subsets."""
        return DEFAULT_ION_SPECIES if self.data is None else ion_numbers(self.data.ion_species)

    def report_context(self) -> ReportContext:
        """Units, resamples and ion species of every MAE the run reports."""
        return ReportContext(units=self.units, n_resamples=self.bootstrap, ion_species=self.ion_species())


def merged(base: Mapping, update: Mapping) -> dict:
    """``update`` merged onto ``base``: mappings key by key, anything else replaces."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


@cache
def _builtin_text(name: str) -> str:
    return resources.files("adascale.configs").joinpath(BUILTIN_RUN_CONFIGS[name]).read_text()


def run_config(
    update: Mapping | None = None, overrides: list[str] | tuple[str, ...] = (), where: str = "run config"
) -> RunConfig:
    """The default run with ``update`` merged onto it and ``key=value`` ``overrides`` applied, validated."""
    raw = merged(yaml.safe_load(_builtin_text("default")), update or {})
    return validated(RunConfig, raw, overrides, where=f"{where}: invalid run config")


def load_run_config(source: str | Path | None, quick: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A built-in run config (``default``, ``quick``, ``paper``, ``amoeba``; None: default, or quick)
    or a YAML file, merged onto the default run, with ``key=value`` overrides; validated."""
    builtin = source is None  # no --config: always the built-in run, whatever lies in the working directory
    if source is None:
        source = "quick" if quick else "default"
    if builtin or (str(source) in BUILTIN_RUN_CONFIGS and not Path(source).is_file()):
        text, where = _builtin_text(str(source)), f"built-in {BUILTIN_RUN_CONFIGS[str(source)]}"
    else:
        try:
            text, where = Path(source).read_text(), str(source)
        except OSError as exc:
            raise AdaScaleError(
                f"{source}: cannot read the run config ({exc.strerror}); built-in configs: {', '.join(BUILTIN_RUN_CONFIGS)}"
            ) from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise AdaScaleError(f"{where}: invalid run config: {str(exc).replace(chr(10), ' ')}") from None
    if not isinstance(raw, Mapping):
        raise AdaScaleError(f"{where}: invalid run config: the top level must be a mapping of settings")
    return run_config(raw, overrides, where=where)


def with_data(config: RunConfig, **settings) -> RunConfig:
    """``config`` on the user's frames (``DataSettings`` fields, e.g. from ``adascale run --data``), validated."""
    try:
        return config.model_copy(update={"data": DataSettings(**settings)})
    except ValidationError as exc:
        raise AdaScaleError(f"--data: {validation_problems(exc)}") from None
