# ruff: noqa: UP021, UP031 - runs on any Python 3, so that an old one gets the message
"""Which Python runs collabmask: the versions pyproject.toml's `requires-python` allows.

    python3 requirements/python_check.py            exit 0 when this interpreter is supported,
                                                    else 1 with a message naming the versions
    python3 requirements/python_check.py --pick     print the newest supported interpreter on
                                                    the PATH (exit 1 when there is none)

The Makefile uses both. Written for any Python 3, so that an old interpreter gets the message
rather than a syntax error.
"""

import os
import re
import subprocess
import sys

PYPROJECT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pyproject.toml")


def supported_versions(pyproject=PYPROJECT):
    """[(3, 11), (3, 12), …] from `requires-python = ">=3.A,<3.B"`."""
    with open(pyproject) as f:
        text = f.read()
    found = re.search(r'^requires-python\s*=\s*">=3\.(\d+),\s*<3\.(\d+)"', text, re.M)
    if not found:
        raise SystemExit('pyproject.toml: requires-python must read ">=3.A,<3.B"')
    low, high = int(found.group(1)), int(found.group(2))
    return [(3, minor) for minor in range(low, high)]


def versions_text(versions):
    names = ["%d.%d" % v for v in versions]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def verdict(version, executable, versions):
    """None when `version` (a sys.version_info-like tuple) is supported, else the message."""
    if tuple(version[:2]) in versions:
        return None
    newest = "python%d.%d" % versions[-1]
    return (
        "collabmask needs Python %s; %s is Python %s. "
        "Install one of them, or point at it: PYTHON=/path/to/%s make run"
        % (versions_text(versions), executable, ".".join(map(str, version[:3])), newest)
    )


def pick(versions):
    """The newest supported interpreter that runs (a pyenv shim of an unselected version
    does not), tried by name: python3.13, python3.12, …, then python3."""
    names = ["python%d.%d" % v for v in reversed(versions)] + ["python3"]
    for name in names:
        try:
            done = subprocess.run(
                [name, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                universal_newlines=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and tuple(map(int, done.stdout.split("."))) in versions:
            return name
    return None


def main(argv):
    versions = supported_versions()
    if argv[1:] == ["--pick"]:
        name = pick(versions)
        if name is None:
            return 1
        print(name)
        return 0
    message = verdict(sys.version_info, sys.executable, versions)
    if message:
        print(message, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
