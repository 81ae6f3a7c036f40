"""Atomic writes: all-or-nothing, and the result looks like any other file the user writes."""
import os
import stat

import pytest

from hf_attn.utils import atomic_dir, atomic_path, write_text_atomic


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_atomic_file_gets_umask_mode_not_mkstemp_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
        with atomic_dir(tmp_path / "ckpt") as d:
            (d / "w.txt").write_text("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.json") == 0o644
    assert _mode(tmp_path / "ckpt") == 0o755


def test_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "metrics.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_set_config_reaches_every_config_copy():
    """T5's stacks keep their own config copies: a knob must reach them, or their attention never sees it."""
    from harness import tiny_model

    from hf_attn.utils import set_config

    model = tiny_model("t5", "holo")
    assert model.encoder.config is not model.config
    set_config(model, holo_unitary=False, hf_attn_window=4)
    for config in (model.config, model.encoder.config, model.decoder.config):
        assert config.holo_unitary is False and config.hf_attn_window == 4
