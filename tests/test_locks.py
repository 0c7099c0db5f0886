"""One writer per unit: a second process on a locked run / part / stage refuses naming the holder; a stale
lock left by a dead process is taken over; a lock is released on exit, error or kill."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from lora_vs_full.errors import UserError
from lora_vs_full.lifecycle import Lock, config_diff, lock_path, locked

_HOLDER = """
import sys, time
from lora_vs_full.lifecycle import Lock
lock = Lock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def _hold_in_subprocess(target):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_process_refuses_naming_pid_and_host_then_takes_over_after_kill(tmp_path):
    target = tmp_path / "seed42"
    proc = _hold_in_subprocess(target)
    try:
        with pytest.raises(UserError) as err:
            Lock(target).acquire()
        msg = str(err.value)
        assert f"pid {proc.pid} on {socket.gethostname()}" in msg and "in use by another process" in msg
        assert "\n" not in msg
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the holder died without cleaning up: its lock file is stale and is taken over
    assert lock_path(target).exists()
    with locked(target) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock_path(target).exists()  # released on exit


def test_stale_lock_file_from_dead_pid_is_taken_over(tmp_path):
    target = tmp_path / "part"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(target).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    with locked(target):
        pass


def test_lock_is_released_when_the_block_raises_and_is_exclusive_in_process(tmp_path):
    target = tmp_path / "stage1"
    with pytest.raises(RuntimeError), locked(target):
        with pytest.raises(UserError, match="in use by another process"):
            Lock(target).acquire()  # a second writer, even in the same process
        raise RuntimeError
    with locked(target):
        pass


def test_flockless_filesystem_falls_back_to_the_pid(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "no locks")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    target = tmp_path / "run"
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock_path(target).write_text(json.dumps({"pid": alive.pid, "host": socket.gethostname()}))
        with pytest.raises(UserError, match=f"pid {alive.pid}"):
            Lock(target).acquire()
        lock_path(target).write_text(json.dumps({"pid": alive.pid, "host": "another-node"}))
        with pytest.raises(UserError, match="another-node"):
            Lock(target).acquire()
    finally:
        alive.kill()
        alive.wait()
    lock_path(target).write_text(json.dumps({"pid": alive.pid, "host": socket.gethostname()}))
    with locked(target):  # dead pid on this host: stale
        pass


def test_train_run_directory_is_locked(tiny_model_dir, tmp_path):
    from lora_vs_full.config import compose_train
    from lora_vs_full.runs import execute, run_dir_for

    cfg = compose_train(["debug=smoke", f"model.source={tiny_model_dir}", f"paths.results_dir={tmp_path}"])
    run_dir = run_dir_for(cfg)
    proc = _hold_in_subprocess(run_dir)
    try:
        t0 = time.time()
        with pytest.raises(UserError, match=f"{run_dir} is in use by another process \\(pid {proc.pid}"):
            execute(cfg, log=lambda m: None, progress=False)
        assert time.time() - t0 < 5 and not (run_dir / "final.json").exists()
    finally:
        proc.kill()
        proc.wait()


def test_config_diff_names_nested_keys():
    old = {"optim": {"lr": 1e-5, "epochs": 5}, "seed": 1}
    new = {"optim": {"lr": 2e-5, "epochs": 5}, "seed": 1, "extra": True}
    assert config_diff(old, new) == ["extra: None -> True", "optim.lr: 1e-05 -> 2e-05"]


@pytest.mark.parametrize("command", ["analyze", "pseudoloss", "intervene", "continual"])
def test_every_command_locks_its_output(tmp_path, command):
    """A second writer on an analysis / pseudo-loss / intervention out dir or a continual run refuses."""
    from omegaconf import OmegaConf

    out = tmp_path / "out"
    if command == "continual":
        from lora_vs_full.continual.config import compose_continual
        from lora_vs_full.continual.sequence import run_continual, run_name

        cfg = compose_continual(["model=tiny", "sequence.tasks=[synth_sentiment,synth_nli]", f"out={out}",
                                 f"paths.results_dir={tmp_path}"])  # fmt: skip
        target, body = out / run_name(cfg), run_continual
    else:
        import importlib

        mod = importlib.import_module(f"lora_vs_full.cli.{command}")
        body = {"analyze": "run", "pseudoloss": "score", "intervene": "intervene"}[command]
        cfg, target, body = OmegaConf.create({"out": str(out)}), out, getattr(mod, body)
    proc = _hold_in_subprocess(target)
    try:
        with pytest.raises(UserError, match=f"in use by another process \\(pid {proc.pid}"):
            body(cfg)
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists() or not any(out.rglob("*.parquet"))
