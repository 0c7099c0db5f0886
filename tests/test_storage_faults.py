"""Atomic writes keep the umask's permissions; an unwritable directory or a full disk is one UserError and
leaves no file that reads as complete; corrupt JSON is one UserError naming the file."""

from __future__ import annotations

import errno
import os
import stat

import pandas as pd
import pytest

from lora_vs_full import storage
from lora_vs_full.errors import UserError


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_files_and_dirs_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        f = storage.atomic_write_json(tmp_path / "a" / "final.json", {"x": 1})
        d = storage.atomic_dir(tmp_path / "ckpt", lambda p: (p / "w.bin").write_bytes(b"1"))
    finally:
        os.umask(old)
    assert _mode(f) == 0o666 & ~umask
    assert _mode(d) == 0o777 & ~umask


def test_full_disk_is_one_user_error_and_leaves_the_old_file(tmp_path, monkeypatch):
    path = storage.atomic_write_json(tmp_path / "final.json", {"old": True})

    def full(p):
        p.write_text('{"half": ')  # a half-written temporary file ...
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UserError, match=r"cannot write .*final\.json: no space left on the device"):
        storage.atomic_write_with(path, full)
    assert storage.read_json(path) == {"old": True}  # ... never replaces the complete one
    assert [p.name for p in tmp_path.iterdir()] == ["final.json"]  # and is removed


def test_full_disk_while_writing_a_table_leaves_no_table(tmp_path, monkeypatch):
    def to_parquet(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", to_parquet)
    with pytest.raises(UserError, match="no space left"):
        storage.write_table(pd.DataFrame({"a": [1]}), tmp_path / "intruders")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_directory_is_one_user_error(tmp_path, monkeypatch):
    if os.geteuid() == 0:  # root writes through permission bits: simulate the refusal instead
        real = storage.tempfile.mkstemp

        def refuse(*a, **k):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(storage.tempfile, "mkstemp", refuse)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(UserError, match=r"cannot write .*ro/t\.json: permission denied"):
            storage.atomic_write_json(ro / "t.json", {})
    finally:
        ro.chmod(0o755)
        if os.geteuid() == 0:
            monkeypatch.setattr(storage.tempfile, "mkstemp", real)
    assert list(ro.iterdir()) == []


def test_a_file_where_a_directory_should_be_is_one_user_error(tmp_path):
    (tmp_path / "out").write_text("not a directory")
    with pytest.raises(UserError, match="not a directory"):
        storage.atomic_write_json(tmp_path / "out" / "x" / "t.json", {})


def test_corrupt_json_is_one_user_error(tmp_path):
    (tmp_path / "final.json").write_text('{"eval_accuracy": 0.9')
    with pytest.raises(UserError, match=r"final\.json is corrupt .*delete it"):
        storage.read_json(tmp_path / "final.json")


def test_checkpoint_directory_is_atomic_and_readable(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lora_vs_full.models.build import save_checkpoint

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    dest = save_checkpoint(model, AutoTokenizer.from_pretrained(tiny_model_dir), tmp_path / "checkpoint")
    assert _mode(dest) == 0o777 & ~storage._umask()
    assert all(_mode(p) == 0o666 & ~storage._umask() for p in dest.iterdir())


def test_full_disk_while_saving_the_checkpoint_then_the_rerun_recovers(tiny_model_dir, tmp_path, monkeypatch):
    from lora_vs_full.config import compose_train
    from lora_vs_full.runs import execute, run_dir_for

    cfg = compose_train(["debug=smoke", "optim.max_steps=2", f"model.source={tiny_model_dir}",
                         f"paths.results_dir={tmp_path}"])  # fmt: skip
    real_replace = os.replace

    def full_disk(src, dst):
        if str(dst).endswith("checkpoint"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", full_disk)
    with pytest.raises(UserError, match=r"cannot write .*checkpoint: no space left on the device"):
        execute(cfg, log=lambda m: None, progress=False)
    run_dir = run_dir_for(cfg)
    assert not (run_dir / "final.json").exists()  # nothing reads as complete
    assert not (run_dir / "checkpoint").exists() and not list(run_dir.parent.glob(".*checkpoint*"))
    monkeypatch.setattr(storage.os, "replace", real_replace)
    final = execute(cfg, log=lambda m: None, progress=False)  # space freed: the rerun completes
    assert final["steps"] == 2 and (run_dir / "checkpoint").is_dir()
