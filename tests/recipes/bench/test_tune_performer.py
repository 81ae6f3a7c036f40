"""recipes/bench/tune_performer.py on CPU (Triton interpreter, tiny shape): every setting is timed per kernel, each
kernel keeps its fastest, and the kernels' own LAUNCH table is left as it was."""
import json

import pytest
from recipe_runs import load_script

pytest.importorskip("triton")
KERNELS = {"_fwd_state", "_fwd", "_bwd_state", "_bwd_dq", "_bwd_dkv"}


def test_smoke_run_keeps_each_kernels_fastest_setting_and_restores_launch(tmp_path):
    from hf_attn.attention.performer import kernel as pk
    from hf_attn.kernels import launch

    tune = load_script("bench/tune_performer.py")
    before = {k: dict(v) for k, v in pk.LAUNCH.items()}
    tune.main(["--smoke", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "tune_performer.json").read_text())
    assert pk.LAUNCH == before and pk.launch_fitting is launch.launch_fitting
    trials = result["trials"]
    assert [t["setting"][0] for t in trials] == [32, 64] and all(set(t["ms"]) == KERNELS for t in trials)
    for name in KERNELS:
        fastest = min(trials, key=lambda t: t["ms"][name])
        assert result["launch"][name] == fastest["setting"]
    assert result["launch"]["C"] == 32
