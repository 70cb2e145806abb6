"""Whether this environment has the ML extra (`collabmask[ml]`: Keras and its backend).

Asked without importing either, so `collabmask start`, the CLI and the web side stay Keras-free.
"""

from __future__ import annotations

import importlib.util
import os

# The top-level modules a missing ML extra shows up as.
ML_MODULES = frozenset({"keras", "tensorflow", "torch", "jax", "h5py"})
INSTALL_HINT = (
    "install the ML extra: pip install 'collabmask[ml]' in this environment, or with pipx "
    "install again with [ml] after the checkout or wheel "
    "(pipx install --force '.[ml]', or 'collabmask-<version>-py3-none-any.whl[ml]')"
)


def ml_missing() -> str | None:
    """None when Keras and its backend can be imported; otherwise what is missing and how to
    install it (training, prediction and inference need them; imports and exports do not)."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    missing = [name for name in ("keras", backend) if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return f"{' and '.join(missing)} not installed; {INSTALL_HINT}"


def is_ml_import_error(exc: BaseException) -> bool:
    """True when `exc` says a module of the ML extra is not installed."""
    return isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in ML_MODULES
