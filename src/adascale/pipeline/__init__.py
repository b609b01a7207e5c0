"""``adascale run`` and ``adascale evaluate``: the whole pipeline with its caching.

Modules: :mod:`~adascale.pipeline.config` (the run config and its loading),
:mod:`~adascale.pipeline.plan` (each stage's cache key), :mod:`~adascale.pipeline.cache` (the
stage runner), :mod:`~adascale.pipeline.stages` (the stages' work), :mod:`~adascale.pipeline.report`
(the merged report), :mod:`~adascale.pipeline.evaluate` (a finished run on new frames). The run
directory's layout is :class:`adascale.layout.RunLayout`.
"""

from adascale.pipeline.config import RunConfig, load_run_config, run_config, with_data
from adascale.pipeline.evaluate import evaluate_run
from adascale.pipeline.plan import stage_plan
from adascale.pipeline.stages import run_pipeline

__all__ = ["RunConfig", "evaluate_run", "load_run_config", "run_config", "run_pipeline", "stage_plan", "with_data"]
