"""Import NNI 3.0's NAS modules with the noise of NNI 3.0 on recent torch filtered out.

NNI 3.0 walks ``torch.nn`` when ``nni.nas.nn.pytorch`` is imported and warns
(``RuntimeWarning: <class 'torch.nn.parameter.Buffer'> is found to be not a
nn.Module``) for every non-module class newer torch versions put there.  The warning
is harmless; it is silenced here, for this import only.
"""
from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*is found to be not a nn\.Module.*", category=RuntimeWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import nni  # noqa: F401
    import nni.nas.nn.pytorch as nas_nn  # noqa: F401

__all__ = ["nas_nn"]
