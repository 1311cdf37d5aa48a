"""`make gpu-check` (tools/gpu_check.py): its steps run on the CPU at tiny size (--dry-run), its report fills the
docs' GPU section between the markers, and without a GPU the real run is one line and exit 2."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_measures_every_step_and_fills_the_gpu_section(tmp_path, tiny_dir, capsys):
    import shutil

    from sfv.cli import main

    tool = _tool()
    out = tmp_path / "out"  # the dry run reuses a tiny SVD and its export found in --out (made here, in-process)
    shutil.copytree(tiny_dir, out / "tiny-svd")
    assert main(["export", "--generator", str(out / "tiny-svd" / "unet"), "--teacher", str(out / "tiny-svd"),
                 "--out", str(out / "tiny-sfv")]) == 0
    assert tool.main(["--dry-run", "--out", str(out)]) == 0
    assert "make_tiny_svd" not in capsys.readouterr().out  # reused, not rebuilt
    report = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    names = [v["name"] for v in report["bench"]["variants"]]
    assert names == ["teacher-2-cfg", "teacher-2", "student-1", "student-1-fast-decoder"]
    assert all(v["status"] == "ok" for v in report["bench"]["variants"])
    f = report["bench"]["fast_decoder"]
    # timed and reported for both decoders (how much faster is the bench's to measure, not a unit test's to assert)
    assert f["decode"] > 0 and 0 < f["decode_share_fast"] < 1 and 0 < f["decode_share_stock"] < 1
    assert [r["activation_checkpointing"] for r in report["memory"]["runs"]] == [False, True]
    assert {r["d_steps"] for r in report["memory"]["runs"]} == {2}  # as the real-size recipes' discriminator.steps_per_g
    [wan] = report["wan"]  # the tiny Wan 2.1 layout: every component timed, the student end to end measured
    assert wan["config"]["arch"] == "tiny-wan21" and set(wan["components"]) >= {"text_encoder", "clip", "vae_encode",
                                                                              "transformer_call", "cfg_step", "vae_decode"}
    assert wan["student_end_to_end"]["median_s"] > 0 and wan["teacher_50_steps_cfg_composed_s"] > wan["student_from_parts_s"]
    docs = tmp_path / "benchmarks.md"
    docs.write_text((ROOT / "docs" / "benchmarks.md").read_text())
    tool.fill_docs(docs, report)
    text = docs.read_text()
    assert "not measured on a GPU yet" not in text and "*to be measured*" not in text
    assert "| student-1-fast-decoder |" in text and "| activation checkpointing | peak, 1 GPU |" in text
    assert "(2 D steps with R1, as discriminator.steps_per_g: 2, then a G step)" in text
    assert "| **student, 1 step, end to end (measured)** |" in text
    assert "## Tiny SVD on CPU (measured)" in text and "What can be said without a GPU" in text
    tool.fill_docs(docs, {**report, "date": "2000-01-01"})  # refilling replaces both sections, nothing else
    again = docs.read_text()
    assert again.count("2000-01-01") == 2 and again.count(report["date"]) == text.count(report["date"]) - 2
    assert again.count(tool.BEGIN) == 1 and again.count(tool.MEM_BEGIN) == 1
    assert len(again.splitlines()) == len(text.splitlines())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without a GPU")
def test_without_a_gpu_the_real_run_is_one_line_and_exit_2(tmp_path, capsys):
    assert _tool().main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU here" in err[0] and not (tmp_path / "out").exists()
