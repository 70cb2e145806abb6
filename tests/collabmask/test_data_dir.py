"""Where state lives: --data-dir, else COLLABMASK_VAR_DIR, else var/ in a checkout (settings,
`make run`), else the user's data directory (the `collabmask` command, an installed package)."""

from __future__ import annotations

from config import datadir
from tests.collabmask.test_cli import collabmask
from tests.conftest import REPO_ROOT

SHOW = "from django.conf import settings; print('VAR_DIR', settings.VAR_DIR, settings.MEDIA_ROOT)"


def test_the_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("COLLABMASK_VAR_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert datadir.data_dir() == REPO_ROOT / "var"  # a checkout keeps var/
    assert datadir.data_dir(in_checkout=False) == tmp_path / "xdg" / "collabmask"
    monkeypatch.setenv("COLLABMASK_VAR_DIR", str(tmp_path / "env"))
    assert datadir.data_dir(in_checkout=False) == tmp_path / "env"
    assert datadir.data_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.chdir(tmp_path)
    assert datadir.data_dir("relative") == tmp_path / "relative"  # made absolute


def test_an_installed_package_is_not_a_checkout(tmp_path):
    assert datadir.is_checkout(REPO_ROOT)
    assert not datadir.is_checkout(tmp_path)


def test_the_command_defaults_to_the_users_data_directory(tmp_path):
    done = collabmask("manage", "shell", "-c", SHOW, env={"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert done.returncode == 0, done.stderr
    where = tmp_path / "xdg" / "collabmask"
    assert f"VAR_DIR {where} {where / 'media'}" in done.stdout
    assert (where / "secret_key").exists()  # generated once, kept there


def test_data_dir_goes_before_or_after_the_command_and_wins_over_the_environment(tmp_path):
    env = {"COLLABMASK_VAR_DIR": str(tmp_path / "env")}
    after = collabmask("manage", "shell", "-c", SHOW, data_dir=tmp_path / "after", env=env)
    assert f"VAR_DIR {tmp_path / 'after'} " in after.stdout, after.stderr
    before = collabmask("--data-dir", str(tmp_path / "before"), "manage", "shell", "-c", SHOW)
    assert f"VAR_DIR {tmp_path / 'before'} " in before.stdout, before.stderr
    from_env = collabmask("manage", "shell", "-c", SHOW, env=env)
    assert f"VAR_DIR {tmp_path / 'env'} " in from_env.stdout, from_env.stderr
