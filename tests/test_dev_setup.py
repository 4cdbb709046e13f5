"""``./dev setup`` says on stderr what it is doing when it installs, and nothing when there is
nothing to do. Run in a copy of the repo's set-up files with a stand-in Python (which makes a
stand-in virtual environment: nothing is downloaded), a stand-in chromium and kcat."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/bin/sh
# A stand-in python: the version check passes, -m venv DIR makes DIR/bin/python (this
# script again), and anything else (pip) succeeds without doing anything.
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0
fi
if [ "$1" = "--version" ]; then echo "Python 3.11.99"; fi
exit 0
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_setup_says_what_it_does_when_it_installs(tmp_path: Path) -> None:
    for name in ("dev", "pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    _executable(bin_dir / "python3", FAKE_PYTHON)
    _executable(bin_dir / "chromium", "#!/bin/sh\nexit 0\n")
    _executable(bin_dir / "kcat", "#!/bin/sh\nexit 0\n")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": str(bin_dir / "python3")}

    def setup() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(tmp_path / "dev"), "setup"],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip

    first = setup()
    assert "setup: creating .venv with Python 3.11.99" in first.stderr
    assert "setup: installing the project and its dev tools" in first.stderr
    assert "setup: done" in first.stderr
    again = setup()
    assert again.stderr == ""  # nothing to install, nothing said
