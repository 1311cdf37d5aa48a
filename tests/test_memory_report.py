"""tools/memory_report.py on CPU at the tiny size: the JSON that a GPU run fills in (full-size SVD) has its fields."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_memory_report_runs_one_fsdp_training_step_and_writes_its_fields(tmp_path):
    out = tmp_path / "memory.json"
    proc = subprocess.run([sys.executable, str(REPO / "tools/memory_report.py"), "--arch", "tiny", "--device", "cpu",
                           "--frames", "4", "--height", "32", "--width", "32", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["parallel"] == "fsdp" and report["world_size"] == 1 and report["peak_kind"] == "cpu_peak_rss"
    assert (report["frames"], report["height"], report["width"]) == (4, 32, 32)
    assert [r["activation_checkpointing"] for r in report["runs"]] == [False, True]
    for r in report["runs"]:
        n = r["parameters"]["generator"]
        assert n == r["parameters"]["teacher_unet"] > 0 and r["parameters"]["discriminator_heads"] > 0
        assert r["peak_bytes"] > 0 and r["d_step_s"] > 0 and r["g_step_s"] > 0
        est = r["estimate_per_gpu_gib"]
        assert est["1"] == r["peak_gib"]
        assert abs((est["1"] - est["8"]) * 2**30 - 7 / 8 * report["sharded_bytes_per_param"] * n) < 1
    assert "activation checkpointing on" in proc.stdout and "per GPU on 8" in proc.stdout
    assert "torchvision" not in proc.stderr  # the libraries' import chatter is quieted (sfv.console.quiet_libraries)
