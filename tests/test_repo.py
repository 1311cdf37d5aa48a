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


def _report_figures(node, found: set[str]) -> set[str]:
    """Every number of a committed report as the docs may quote it: floats at 1–3 decimals, and the numbers
    inside its text (the targets' figures, e.g. '16.1×')."""
    if isinstance(node, dict):
        for v in node.values():
            _report_figures(v, found)
    elif isinstance(node, list):
        for v in node:
            _report_figures(v, found)
    elif isinstance(node, float):
        found |= {f"{node:.{d}f}" for d in (1, 2, 3)}
    elif isinstance(node, str):
        found |= set(re.findall(r"\d+\.\d+", node))
    return found


def test_readme_toy_figures_are_in_the_committed_demo_report():
    """The README's measured toy figures (its 'Measured:' paragraph) all come from docs/demo-report.json, the report
    of the fresh-clone `make demo` that the docs cite; a figure that the report does not contain fails here."""
    report = json.loads((ROOT / "docs" / "demo-report.json").read_text())
    figures = _report_figures(report, set())
    base = next(r["seconds_per_video"] for r in report["rows"] if r["name"] == "teacher-25")
    figures |= {f"{base / r['seconds_per_video']:.1f}" for r in report["rows"] if r["seconds_per_video"] > 0}  # speed-ups
    readme = (ROOT / "README.md").read_text()
    measured = readme[readme.index("Measured (docs/demo-report.json"): readme.index("See [docs/toy.md]")]
    quoted = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", measured)
    assert len(quoted) >= 8, quoted
    missing = [q for q in quoted if q not in figures and q.rstrip("0").rstrip(".") not in figures]
    assert not missing, f"README figures not in docs/demo-report.json: {missing}"
