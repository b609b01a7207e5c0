"""adascale: machine-learned molecular force prediction across spatial scales.

Heavy parts (torch models, the ASE calculator, the rigid-water constraint) are imported lazily so that
``import adascale`` and the command line stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "AdaScaleCalculator", "RigidWater"]


def __getattr__(name: str):
    if name == "AdaScaleCalculator":
        from adascale.deploy.calculator import AdaScaleCalculator

        return AdaScaleCalculator
    if name == "RigidWater":
        from adascale.deploy.rigid_water import RigidWater

        return RigidWater
    raise AttributeError(f"module 'adascale' has no attribute {name!r}")
