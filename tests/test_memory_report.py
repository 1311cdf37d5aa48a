"""tools/memory_report.py on CPU at the tiny size: the JSON that a GPU run fills in (full-size SVD) has its fields; and its
full-size arithmetic of a LoRA G against a full G (meta device, no step run)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_memory_report_runs_one_fsdp_training_step_and_writes_its_fields(tmp_path):
    out = tmp_path / "memory.json"
    proc = subprocess.run([sys.executable, str(REPO / "tools/memory_report.py"), "--arch", "tiny", "--device", "cpu",
                           "--frames", "4", "--height", "32", "--width", "32", "--d-steps", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["parallel"] == "fsdp" and report["world_size"] == 1 and report["peak_kind"] == "cpu_peak_rss"
    assert (report["frames"], report["height"], report["width"]) == (4, 32, 32)
    assert [r["activation_checkpointing"] for r in report["runs"]] == [False, True]
    for r in report["runs"]:
        n = r["parameters"]["generator"]
        assert n == r["parameters"]["teacher_unet"] > 0 and r["parameters"]["discriminator_heads"] > 0
        assert r["peak_bytes"] > 0 and r["d_step_s"] > 0 and r["g_step_s"] > 0 and r["d_steps"] == 2
        est = r["estimate_per_gpu_gib"]
        assert est["1"] == r["peak_gib"]
        assert abs((est["1"] - est["8"]) * 2**30 - 7 / 8 * report["sharded_bytes_per_param"] * n) < 1
    assert "activation checkpointing on" in proc.stdout and "per GPU on 8" in proc.stdout
    assert "torchvision" not in proc.stderr  # the libraries' import chatter is quieted (sfv.console.quiet_libraries)


def test_lora_table_counts_full_size_svd_xt_and_wan_14b_with_one_shared_base(tmp_path, capsys):
    import runpy

    tool = runpy.run_path(str(REPO / "tools/memory_report.py"), run_name="memory_report")
    assert tool["main"](["--lora", "--out", str(tmp_path / "lora.json")]) == 0
    out = capsys.readouterr().out
    t = json.loads((tmp_path / "lora.json").read_text())
    svd, wan = t["models"]
    assert (svd["parameters"], wan["parameters"]) == (1_524_623_082, 16_394_878_784)  # Wan 2.1 I2V-14B: 16.4 B
    for m in (svd, wan):
        full, *lora = m["rows"]  # full G: the frozen bf16 teacher (D's backbone) + G's 20 B/param
        assert full["trained_parameters"] == m["parameters"] and full["total_bytes"] == 22 * m["parameters"]
        for r in lora:  # one bf16 base (teacher = G's base = D's backbone) + 20 B per adapter parameter
            assert r["total_bytes"] == 2 * m["parameters"] + 20 * r["trained_parameters"] and r["trained_parameters"] < 0.03 * m["parameters"]
            if t["fp8_storage_works"]:
                assert r["total_fp8_base_bytes"] == r["total_bytes"] - m["parameters"]
    assert svd["rows"][2]["G"] == "LoRA attn r64" and svd["rows"][2]["trained_parameters"] == 26_558_464
    assert 3e9 < svd["checkpointed_inputs_bytes"] < 4e9 and 13e9 < wan["checkpointed_inputs_bytes"] < 14e9
    assert svd["card"]["base"] == "bf16" and svd["card"]["checkpointed_inputs"] == "on the GPU"
    if t["fp8_storage_works"]:  # Wan 14B fits 24 GB only on an fp8 base with its block inputs in CPU memory
        assert (wan["card"]["base"], wan["card"]["checkpointed_inputs"], wan["card"]["G"]) == ("fp8", "in CPU memory", "LoRA attn r32")
    assert "| SVD-XT UNet, 25×576×1024 | full |" in out and "on a 24 GB card" in out
