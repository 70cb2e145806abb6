"""Where the embedded mode keeps its state (database, media, secrets, the embedded Redis, logs).

One rule, used by the settings and by the `collabmask` command: COLLABMASK_VAR_DIR when it is
set; `var/` inside a source checkout (the folder with manage.py), so `make run` and the tests
keep today's layout; otherwise the user's data directory ($XDG_DATA_HOME/collabmask, usually
~/.local/share/collabmask, on Linux), which is where an installed package has to keep it.
"""

from __future__ import annotations

from pathlib import Path

import platformdirs

from config.env import env_str

APP_NAME = "collabmask"
VAR_DIR_VARIABLE = "COLLABMASK_VAR_DIR"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def user_data_dir() -> Path:
    """The user's data directory for collabmask, as the platform's conventions place it."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def is_checkout(root: Path = _PROJECT_ROOT) -> bool:
    """True when the code runs from a source checkout rather than an installed package."""
    return (root / "manage.py").is_file()


def data_dir(given: str | Path | None = None, *, in_checkout: bool = True) -> Path:
    """The data directory (absolute): `given` (a --data-dir), else COLLABMASK_VAR_DIR, else
    var/ of a source checkout (unless in_checkout=False: the `collabmask` command defaults to
    the user's data directory wherever it runs), else the user's data directory."""
    chosen = given or env_str(VAR_DIR_VARIABLE)
    if chosen:
        return Path(chosen).expanduser().resolve()
    if in_checkout and is_checkout():
        return _PROJECT_ROOT / "var"
    return user_data_dir()
