"""The README's research script runs as written."""

import os
import re
import subprocess
import sys

from conftest import REPO


def test_readme_research_script_trains_and_evaluates(tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Use it from your own script", 1)[1]
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(script.strip().splitlines()) <= 25
    (tmp_path / "script.py").write_text(script)
    result = subprocess.run([sys.executable, str(tmp_path / "script.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr
    assert "images[64:]" in script and "range(0, 64, 16)" in script  # trained on the first 64
    assert result.stdout.startswith("held-out accuracy")
    accuracy = float(result.stdout.split()[-1])
    assert accuracy >= 0.9  # the two classes differ by one standard deviation per pixel
