"""benchmarks/gpu_check.py on a machine without a GPU: the plan, the no-CUDA message, the code a GPU run takes.

The correctness part runs for real under Triton's interpreter (a subprocess: TRITON_INTERPRET=1 must be set
before triton is imported) on the first correctness cases, and the timing part once on a tiny shape.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # Triton's interpreter in a subprocess

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_builds_the_whole_plan_on_cpu(gpu_check, tmp_path):
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert len(report["correctness"]) == len(gpu_check.CASES) == 19
    timing = report["timing"]
    assert {(r["seq"], r["head_dim"]) for r in timing} == {(L, d) for L in (4096, 16384, 32768) for d in (64, 128)}
    assert {r["pattern"] for r in timing} == {"local w=256 g=1", "bigbird b=64 band1 g1 r2"}
    for r in timing:
        assert 0 < r["flops_fwd"] < r["dense_flops_fwd"] and r["flops_fwd_bwd"] == 3.5 * r["flops_fwd"]
    local = sorted((r for r in timing if r["pattern"].startswith("local") and r["head_dim"] == 64),
                   key=lambda r: r["seq"])
    assert local[0]["block_density"] > local[1]["block_density"] > local[2]["block_density"]  # band: O(L) of O(L^2)
    assert "dry run" in report["not_run"][0]
    assert "## Speed" in (tmp_path / "gpu_check.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_and_exits_nonzero(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "gpu_check.json").exists()


def test_markdown_lists_failures_and_what_did_not_run(gpu_check):
    bad = {"case": "L1", "dtype": "float16", "ok": False, "vs_float64": {"out": 0.5, "dq": 0, "dk": 0, "dv": 0},
           "torch_vs_float64": {"out": 1e-3, "dq": 0, "dk": 0, "dv": 0}}
    text = gpu_check.markdown({"device": "x", "torch": "t", "triton": "t", "timing_dtype": "bfloat16",
                               "correctness": [bad], "timing": [], "not_run": ["flex: missing"]})
    assert "| float16 | 1 | 0 |" in text and "FAILED float16 L1" in text and "- flex: missing" in text


def test_correctness_part_runs_under_the_interpreter(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--interpret", "--cases", "3", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = report["correctness"]
    assert [(r["dtype"], r["case"]) for r in rows][:3] == [
        ("float32", "L1-b16-full"), ("float32", "L1-b64-local-padded-row"), ("float32", "L63-b16-local-global-pad")]
    assert len(rows) == 6 and all(r["ok"] for r in rows), rows
    for r in rows:
        tol = 1e-4 if r["dtype"] == "float32" else 2e-2
        assert max(r["vs_float64"].values()) <= tol, r
    assert rows[1]["empty_rows_abs_max"] == 0.0  # the padded row (no key at all) outputs zeros
    assert any("bfloat16" in x for x in report["not_run"]) and any("timing" in x for x in report["not_run"])
    # the timing code path, once, on tiny shapes (CPU wall time of one call: plumbing, not speed)
    timing = report["timing"]
    assert [(r["seq"], r["heads"], r["head_dim"]) for r in timing] == [(128, 2, 64)] * 2
    for r in timing:
        assert r["ours_fwd_ms"] > 0 and r["ours_fwd_bwd_ms"] > 0 and r["sdpa_flash_over_ours_fwd"] > 0, r
    assert "## Speed" in (tmp_path / "gpu_check.md").read_text()
