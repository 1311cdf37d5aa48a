"""Repository contracts: CI runs exactly the README's test command; the tiny-SVD tool works from a shell."""

import json
import re
import subprocess
import sys
from pathlib import Path

from diffusers import StableVideoDiffusionPipeline

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
    readme_cmds = re.findall(r"^make (\w+)\s", (ROOT / "README.md").read_text(), flags=re.M)
    assert readme_cmds[:2] == ["demo", "test"]
    ci_lines = [l for l in (ROOT / ".ci" / "run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    assert ci_lines == ["make test"]


def test_make_tiny_svd_tool(tmp_path):
    out = tmp_path / "tiny"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "make_tiny_svd.py"), "--out", str(out), "--frames", "3",
                           "--unet-channels", "32,32,64", "--example-image", str(tmp_path / "ex.png")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "tiny_svd.json").read_text())["unet_channels"] == [32, 32, 64]
    pipe = StableVideoDiffusionPipeline.from_pretrained(out, use_safetensors=True)  # the stock pipeline loads it
    assert pipe.unet.config.num_frames == 3 and pipe.unet.config.block_out_channels == [32, 32, 64]
    assert (tmp_path / "ex.png").stat().st_size > 0
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "make_tiny_svd.py"), "--out", str(tmp_path / "bad"),
                          "--unet-channels", "16,32"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "multiple of 32" in bad.stderr and "Traceback" not in bad.stderr


def test_main_guard_is_the_last_statement():
    """`python -m module` runs the guard the moment it is reached: anything defined below it does not exist yet."""
    import ast

    for path in sorted([*(ROOT / "sfv").rglob("*.py"), *(ROOT / "tools").glob("*.py")]):
        body = ast.parse(path.read_text()).body
        guards = [i for i, node in enumerate(body) if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
        assert guards in ([], [len(body) - 1]), f"{path.relative_to(ROOT)}: code after the `if __name__ == '__main__'` block"
