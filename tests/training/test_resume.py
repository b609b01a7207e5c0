"""The one loop resumes after SIGKILL, for every trainable model kind, to the uninterrupted run's weights bit for bit,
and the resumed process runs only the steps that remained.

The killed run is a forked child process (imports inherited, so no start-up cost) that sends
itself SIGKILL right after step KILL_AT; `adascale train` is killed from outside in test_trainer.py.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from adascale.training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from adascale.training.loop import LOG_FILE, TrainingLoop
from training.loop_cases import CASES, TOTAL_STEPS, state_equal

pytestmark = pytest.mark.integration  # training processes killed and resumed

KILL_AT = 7  # after the step-6 checkpoint: step 7 is lost and redone


def _run_and_kill(kind: str, out: Path, kill_at: int) -> int:
    """Run the case in a forked child that SIGKILLs itself after step ``kill_at``; returns its wait status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:

            def on_step(done: int, total: int, status: str) -> None:
                if done == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

            task, settings = CASES[kind]()
            TrainingLoop(task, settings, out, on_step=on_step).run()
        finally:
            os._exit(1)  # only reached if the kill did not happen
    return os.waitpid(pid, 0)[1]


def _log(directory: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k != "elapsed_s"}
        for line in (directory / LOG_FILE).read_text().splitlines()
    ]


@pytest.mark.parametrize("kind", list(CASES))
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(tmp_path, kind):
    task, settings = CASES[kind]()
    straight = TrainingLoop(task, settings, tmp_path / "straight").run()
    assert straight.steps == TOTAL_STEPS and straight.resumed_at_step == 0

    killed = tmp_path / "killed"
    status = _run_and_kill(kind, killed, KILL_AT)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert load_checkpoint(killed / CHECKPOINT_FILE)["progress"]["global_step"] == 6

    resumed_task, settings = CASES[kind]()
    loop = TrainingLoop(resumed_task, settings, killed)
    loop.resume()
    assert loop.state.global_step == 6 and loop.state.step_in_epoch == 2  # progress right after resume
    result = loop.run()
    assert (result.resumed_at_step, result.session_steps, result.steps) == (6, TOTAL_STEPS - 6, TOTAL_STEPS)
    assert state_equal(resumed_task.model.state_dict(), task.model.state_dict())  # the best epoch's weights
    last = [load_checkpoint(d / CHECKPOINT_FILE)["model"] for d in (tmp_path / "straight", killed)]
    assert state_equal(*last)  # the last step's weights
    assert _log(killed) == _log(tmp_path / "straight")
