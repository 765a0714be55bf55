"""Ray is optional: without it, `play` with the default backend runs as ever, and a config
that asks for Ray fails on one line that names the key and the install, before any run exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_game_resume import REPOSITORY, write_toml

# Ray made unimportable, as in an install without the extra.
WITHOUT_RAY = """
import json, sys
sys.modules["ray"] = None
from tui.cli import main
statuses = [main(["play", "--config", path]) for path in sys.argv[1:]]
print(json.dumps({"statuses": statuses, "ray_loaded": sys.modules.get("ray") is not None}))
"""


def test_play_needs_ray_only_when_the_config_asks_for_it(tiny_lm_dir: Path, tmp_path: Path) -> None:
    local, on_ray = tmp_path / "local.toml", tmp_path / "ray.toml"
    write_toml(local, tiny_lm_dir, tmp_path / "local-runs")
    local.write_text(local.read_text().replace("num_epochs = 2", "num_epochs = 1"))
    write_toml(on_ray, tiny_lm_dir, tmp_path / "ray-runs")
    on_ray.write_text(on_ray.read_text() + '\n[cluster]\nbackend = "ray"\n')
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "MINMAX_ENGINE_CACHE": str(tmp_path / "cache"),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", WITHOUT_RAY, str(on_ray), str(local)], cwd=REPOSITORY, env=env,
                          capture_output=True, text=True, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"statuses": [2, 0], "ray_loaded": False}
    assert ("minmax-engine play: error: [cluster] backend = \"ray\" needs Ray, which is not installed: "
            "pip install -e '.[ray]'") in done.stderr
    assert not (tmp_path / "ray-runs").exists()  # refused before a run directory was made
    assert len(list((tmp_path / "local-runs").iterdir())) == 1
