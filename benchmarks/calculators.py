"""ASE calculator factories (``module:factory:arg``) for the benchmarked models.

``adascale predict --calculator`` and ``speed.py`` load a model through these, so MACE goes
through adascale's own predict/analyze/refine like any other branch, and both families are
timed through the same ASE interface:

    PYTHONPATH=benchmarks adascale predict \
        --calculator calculators:mace_calculator:runs/bench/models/mace_r3.5/mace_r3.5.model \
        --calculator calculators:mace_calculator:runs/bench/models/mace_r6.0/mace_r6.0.model \
        --data test.extxyz --out mace_test.npz

Both run on CPU in float32, the precision both were trained in.
"""

from __future__ import annotations


def mace_calculator(model_path: str):
    """MACECalculator of a ``mace_run_train`` model file.

    The file is mace-torch's own format (a whole pickled module), so loading it runs
    mace's unpickling: use only files you trained. Importing mace sets the environment
    variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD in this process, so load it only in a
    process of its own (predict and speed.py each run as one).
    """
    from mace.calculators import MACECalculator

    return MACECalculator(model_paths=model_path, device="cpu", default_dtype="float32")


def adascale_calculator(model_dir: str):
    """adascale's ASE calculator over a trained branch directory, in float32."""
    from adascale.deploy.calculator import AdaScaleCalculator

    return AdaScaleCalculator(model_dir, dtype="float32")
