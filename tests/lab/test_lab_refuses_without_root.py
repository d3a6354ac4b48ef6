"""Without root the lab commands refuse in one clear line: no traceback, nothing created.

The check runs the real command in a subprocess whose process believes it is not root
(`os.geteuid` answers 65534): an unprivileged uid cannot even start this venv's interpreter when
it lives under /root, and the code path is the same.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AS_NOBODY = (
    "import os, runpy, sys\n"
    "os.geteuid = lambda: 65534\n"
    "sys.argv = ['manage.py', 'kviz', 'lab'] + sys.argv[1:]\n"
    "runpy.run_path('manage.py', run_name='__main__')\n"
)


@pytest.mark.parametrize("args", [["up", "--prefix", "kvtnoroot"], ["down"], ["status"],
                                  ["run", "pod", "--out", "/nonexistent/kviz-out"]])
def test_it_refuses_without_root_in_one_line(args):
    result = subprocess.run([sys.executable, "-c", AS_NOBODY, *args], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith("kviz lab needs root"), result.stderr
    assert result.stdout == ""
    assert not Path("/nonexistent/kviz-out").exists()
