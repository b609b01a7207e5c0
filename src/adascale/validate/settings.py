"""What a validation runs: the thermodynamic state, the MD protocol and the engine threads.

Default protocol (22 ps of MD per potential at 2 fs, 11,000 steps). It is sized for the
deployed model, the slow side: OpenMM drives it at ~6.5 steps/s at 748 atoms, so one validation
takes ~30 min on 2 cores, and the reference force field adds ~1 min once (cached). The density's
block standard error over 10 ps of NPT production is ~0.5 % for 748 atoms (volume fluctuations
of ~1.5 %, correlated over ~1 ps under a barostat move every 25 steps), within the 0.7 % wanted
to decide a 2 % density target. What gives is equilibration: 4 ps of NPT lets a model whose
density is wrong move most of the way, not all of it (a model that is still drifting shows a
density error biased towards the start); the NVT part (2 + 6 ps) is just long enough for
RDFs of the water pairs and a diffusion coefficient to ~10 %, while the sparse ion pairs (5 Na,
5 Cl) carry a large statistical error, which the report states beside each error.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adascale.errors import AdaScaleError

#: Validation output format version; bump when a change alters the cached reference runs.
VALIDATE_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StateSettings(_Strict):
    """The thermodynamic state both potentials are run at."""

    temperature_K: float = Field(300.0, gt=0)
    pressure_bar: float = 1.0


class ProtocolSettings(_Strict):
    """The MD protocol, identical for the model and the reference.

    Each phase starts from the starting frame with seeded Maxwell-Boltzmann velocities: NPT at
    the frame's own box, NVT at the box of the reference's mean NPT density (molecules moved
    rigidly with their centres). ``sample_ps``: positions, box and energy are recorded this
    often. ``blocks``: block count for every standard error (density, RDFs, diffusion).
    ``window_ps``: the stability window (Fu et al.: a run has collapsed at the first 1 ps window
    whose largest water-RDF error exceeds ``collapse_error``). ``approach_factor``: a model run
    also collapses when two molecules come closer than this factor times the closest approach of
    their kind (ion-water, water-water) in any reference frame (1.0 would flag a model exactly as
    good as the reference by sampling chance alone).
    """

    npt_equil_ps: float = Field(4.0, ge=0)
    npt_prod_ps: float = Field(10.0, gt=0)
    nvt_equil_ps: float = Field(2.0, ge=0)
    nvt_prod_ps: float = Field(6.0, gt=0)
    timestep_fs: float = Field(2.0, gt=0)
    friction_per_ps: float = Field(1.0, gt=0)
    barostat_interval: int = Field(25, ge=1)
    sample_ps: float = Field(0.1, gt=0)
    seed: int = Field(0, ge=0)
    blocks: int = Field(5, ge=4)
    window_ps: float = Field(1.0, gt=0)
    collapse_error: float = Field(3.0, gt=0)
    approach_factor: float = Field(0.9, gt=0, le=1)

    def steps(self, ps: float) -> int:
        """Time steps in ``ps`` picoseconds, whole samples only."""
        return self.sample_steps * round(ps / (self.sample_steps * self.timestep_fs * 1e-3))

    @property
    def sample_steps(self) -> int:
        return max(1, round(self.sample_ps / (self.timestep_fs * 1e-3)))

    @model_validator(mode="after")
    def _long_enough(self) -> ProtocolSettings:
        for name in ("npt_prod_ps", "nvt_prod_ps"):
            samples = self.steps(getattr(self, name)) // self.sample_steps
            if samples < 2 * self.blocks:
                raise ValueError(
                    f"{name}={getattr(self, name):g} gives {samples} samples of {self.sample_ps:g} ps, too few for "
                    f"{self.blocks} blocks of 2 samples each (the standard errors need them): lengthen it or sample more often"
                )
        return self


class ValidateSettings(_Strict):
    """State, protocol and engine threads of one validation (``threads``: None = OpenMM's choice)."""

    state: StateSettings = StateSettings()
    protocol: ProtocolSettings = ProtocolSettings()
    threads: int | None = Field(None, ge=1)

    def reference_key(self, frame_digest: str) -> str:
        """Hash of what a reference run depends on: state, protocol, starting frame, format version."""
        payload = {"state": self.state.model_dump(), "protocol": self.protocol.model_dump(), "frame": frame_digest}
        payload["version"] = VALIDATE_VERSION
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def settings_from(overrides: list[str] | tuple[str, ...] = (), base: dict | None = None) -> ValidateSettings:
    """Settings from ``key=value`` overrides (dotted keys, YAML values, e.g. protocol.nvt_prod_ps=3) on ``base``."""
    from pydantic import ValidationError

    from adascale.training.config import apply_override

    raw = dict(base or {})
    for item in overrides:
        apply_override(raw, item)
    try:
        return ValidateSettings.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise AdaScaleError(f"validate settings: {where + ': ' if where else ''}{error['msg']}") from None
