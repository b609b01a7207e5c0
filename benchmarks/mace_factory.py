"""A MACE model file as an ASE calculator, for ``adascale predict --calculator``.

Lets adascale's own predict/analyze/refine treat a trained MACE like any other branch:

    PYTHONPATH=benchmarks adascale predict \
        --calculator mace_factory:mace_calculator:runs/bench/mace_r3.5/mace_r3.5.model \
        --calculator mace_factory:mace_calculator:runs/bench/mace_r6.0/mace_r6.0.model \
        --data test.extxyz --out mace_test.npz

The model file is mace-torch's own format (a whole pickled module written by
``mace_run_train``), so loading it runs mace's unpickling: use only files you trained.
"""

from __future__ import annotations


def mace_calculator(model_path: str):
    """MACECalculator for ``model_path`` on CPU in float32 (the dtype it was trained in)."""
    from mace.calculators import MACECalculator

    return MACECalculator(model_paths=model_path, device="cpu", default_dtype="float32")
