"""Let the lvis package (LVISEval) run on current NumPy.

lvis 0.5.3, the newest release on PyPI, accumulates with ``np.float``, which NumPy 1.24 removed
(lvis-dataset/lvis-api#37, fixed on its main branch but not released). Until a release has the fix,
restore that alias (it was exactly the builtin ``float``) before LVIS evaluation runs.
"""
import numpy as np


def patch_numpy_for_lvis() -> None:
    if "float" not in np.__dict__:
        np.float = float  # the alias NumPy < 1.24 had; affects nothing that does not look it up
