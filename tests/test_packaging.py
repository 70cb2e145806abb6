"""What the wheel carries: every module (packages.find needs an __init__.py in each folder),
every template, stylesheet and script (package-data), and the `collabmask` command.

CI builds and installs the wheel itself (.ci/wheel-smoke); these checks are the quick part."""

from __future__ import annotations

import tomllib

from tests.conftest import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
FOUND = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
PACKAGES = sorted(pattern.rstrip("*") for pattern in FOUND)


def test_every_folder_of_python_code_is_a_package():
    missing = [
        str(folder.relative_to(REPO_ROOT))
        for package in PACKAGES
        for folder in [REPO_ROOT / package, *(REPO_ROOT / package).rglob("*")]
        if folder.is_dir()
        and folder.name != "__pycache__"
        and any(folder.glob("*.py"))
        and not (folder / "__init__.py").exists()
    ]
    assert not missing, f"left out of the wheel (no __init__.py): {missing}"


def test_every_web_asset_is_package_data():
    app = REPO_ROOT / "annotation"
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["annotation"]
    carried = {path for pattern in patterns for path in app.glob(pattern)}
    assets = {
        path
        for folder in ("templates", "static")
        for path in (app / folder).rglob("*")
        if path.is_file()
    }
    assert assets, "no templates or static files found"
    left_out = sorted(str(path.relative_to(REPO_ROOT)) for path in assets - carried)
    assert not left_out, f"add a package-data pattern for: {left_out}"


def test_the_command_is_installed_with_the_package():
    assert PYPROJECT["project"]["scripts"] == {"collabmask": "collabmask.cli:main"}
    assert "collabmask" in PACKAGES
