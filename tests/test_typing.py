"""fastnorm's annotations as a type checker sees them: a user script passes mypy --strict and pyright --strict,
a wrong argument type is caught, and pyright rates the package's exported types at least 95% complete.  Each
check runs where its tool is installed (CI installs both)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "typing", "user_script.py")
ENV = dict(os.environ, MYPYPATH=os.path.join(ROOT, "python"))


def _mypy(path):
    pytest.importorskip("mypy", reason="mypy is not installed")
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental",
                           path], capture_output=True, text=True, env=ENV, timeout=600)


def test_a_user_script_passes_mypy_strict():
    done = _mypy(SCRIPT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wrong_argument_type_is_caught(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy as np\nimport fastnorm\n\nfastnorm.relu(np.ones(3), num_threads='2')\n")
    done = _mypy(str(bad))
    assert done.returncode == 1 and "num_threads" in done.stdout and "arg-type" in done.stdout


def _pyright():
    exe = shutil.which("basedpyright") or shutil.which("pyright")
    if exe is None:
        pytest.skip("neither basedpyright nor pyright is installed")
    return exe


def test_a_user_script_passes_pyright_strict():
    exe = _pyright()
    done = subprocess.run([exe, "-p", os.path.join(ROOT, "tests", "typing", "pyrightconfig.json"), SCRIPT],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_exported_types_are_at_least_95_percent_complete():
    exe = _pyright()
    done = subprocess.run([exe, "--verifytypes", "fastnorm", "--ignoreexternal", "--outputjson"],
                          capture_output=True, text=True, cwd=os.path.join(ROOT, "python"), timeout=600)
    score = json.loads(done.stdout)["typeCompleteness"]["completenessScore"]
    assert score >= 0.95, f"type completeness {score:.1%}"
