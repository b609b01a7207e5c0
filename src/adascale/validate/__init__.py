"""MD observables of a model against the reference force field, side by side in OpenMM.

``validate_model(model_dir, frame, settings, out_dir)`` runs NPT and NVT MD with the model and
with the testbed's own force field from the same frame, same integrator and seeds, and compares
density, RDFs (error of Fu et al., "Forces are not Enough", TMLR 2023), water self-diffusion and
stability. ``ValidateSettings`` holds the state, the protocol and the engine threads.
"""

from adascale.validate.core import default_cache_dir, validate_model, validate_potential
from adascale.validate.settings import ValidateSettings, settings_from

__all__ = ["ValidateSettings", "default_cache_dir", "settings_from", "validate_model", "validate_potential"]
