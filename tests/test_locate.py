"""The note `heed serve` leaves for management commands run from another directory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from proxy.locate import forget, record_file, remember, running


def test_a_running_serve_is_found_and_forgotten_when_it_stops(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    assert running(env) is None
    remember(env, config=tmp_path / "config" / "heed.yaml", data_dir=Path("var/redis"),
             policies=Path("policies"))
    found = running(env)
    assert found is not None and found["config"] == str(tmp_path / "config" / "heed.yaml")
    assert Path(found["data_dir"]).is_absolute()  # resolved where serve ran, not here
    forget(env)
    assert running(env) is None and not record_file(env).exists()


def test_a_stale_note_is_ignored(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    dead = subprocess.Popen(["true"])
    dead.wait()
    record_file(env).parent.mkdir(parents=True)
    record_file(env).write_text(json.dumps({"pid": dead.pid, "config": None,
                                            "data_dir": "/x", "policies": "/y"}))
    assert running(env) is None


def test_an_unwritable_place_only_loses_the_note(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    env = {"XDG_STATE_HOME": str(blocked)}  # a file where the folder should be
    remember(env, config=None, data_dir=tmp_path, policies=tmp_path)
    assert running(env) is None
