"""Under DDP every rank makes the same collectives while the DataModule sets up (`BaseTextData._run_dir`).

``Trainer.log_dir`` broadcasts rank 0's directory. Read on rank 0 alone (to save the tokenizer with the run),
it paired with rank 1's next collective and a run with a logger hung at ModelCheckpoint's setup.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("_ddp_logger_script.py")


@pytest.mark.slow
def test_ddp_run_with_a_logger_and_a_checkpoint_callback_finishes(tmp_path: Path, corpus: dict[str, Path]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(30500 + os.getpid() % 1000)}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path), str(corpus["train"])], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # both ranks: Lightning starts rank 1 in the same session
        proc.communicate()
        pytest.fail("the two-process run hung: the ranks' collectives are out of step")
    assert proc.returncode == 0, stderr[-4000:]
    run_dir = tmp_path / "runs" / "ddp" / "version_0"
    assert (run_dir / "tokenizer" / "tokenizer.json").is_file()  # rank 0 still saves the tokenizer with the run
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
