"""The README's Python API example runs as it is written, on the demo shot."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_api_example_runs(tmp_path):
    text = README.read_text()
    section = text[text.index("## Python API"):text.index("\n## ", text.index("## Python API") + 5)]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    from facefix.demo import write_demo

    write_demo(tmp_path / "example", n_frames=3)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "3 frames written to example/api/fixed.####.exr" in out.stdout
    assert sorted(p.name for p in (tmp_path / "example" / "api").glob("fixed.*.exr")) == [
        "fixed.1001.exr", "fixed.1002.exr", "fixed.1003.exr"]
    pixels = [int(line.split()[-1]) for line in out.stdout.splitlines() if "face pixels" in line]
    assert len(pixels) == 3 and min(pixels) > 1000  # the face was found and matted on every frame
