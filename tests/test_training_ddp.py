"""DDP: under torchrun (2 processes, gloo, CPU) every step has one batch type on all ranks and no group twice."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # torchrun with two processes

SCRIPT = Path(__file__).resolve().parent / "ddp_hybrid.py"


@pytest.mark.slow
def test_ddp_steps_are_consistent_across_ranks(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
           str(SCRIPT), str(tmp_path)]
    # Own process group, so a hang is killed with all its workers instead of leaving them orphaned.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in 240 s: {stderr[-4000:]}")
    assert proc.returncode == 0, stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["process_rank"] for r in ranks] == [0, 1]
    seen0, seen1 = ranks[0]["seen"], ranks[1]["seen"]
    # 44 groups / (4 per batch x 2 ranks) = 5 full steps and 4 groups left per epoch, 2 epochs. Under DDP
    # sentence-transformers forces dataloader_drop_last=True (with a warning); the sampler honours it, so the
    # partial step is dropped on both ranks alike (no rank waits on a gather the other never makes).
    assert len(seen0) == len(seen1) == 10
    assert [len(b) for b in seen0] == [len(b) for b in seen1] == [4] * 10
    kinds = set()
    for step, (b0, b1) in enumerate(zip(seen0, seen1)):
        pairs = b0 + b1
        groups = [g for g, _, _ in pairs]
        assert len(set(groups)) == len(groups), f"step {step}: a group repeats across ranks: {groups}"
        mono = [ql == pl for _, ql, pl in pairs]
        assert all(mono) or not any(mono), f"step {step}: ranks disagree on the batch type: {b0} vs {b1}"
        if all(mono):
            assert len({ql for _, ql, _ in pairs}) == 1, f"step {step}: X-X step mixes languages"
        kinds.add("X-X" if all(mono) else "X-Y")
    assert kinds == {"X-X", "X-Y"}
