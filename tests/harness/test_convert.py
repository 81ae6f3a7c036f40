"""hf-attn convert end to end on the CPU, the conversion verdict as a table, and passkey scoring that can fail."""
import json
import random
import re
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer

import hf_attn
from hf_attn.assets import load_smollm2, smollm2_path
from train_cases import REPO
from hf_attn.cli import main
from hf_attn.harness.convert import conversion_verdict, variant_share
from hf_attn.harness.passkey import greedy_answer, passkey_accuracy, passkey_prompt

T = {"ppl_wiki": 10.0, "decode_cache_mib": 100.0}


@pytest.mark.parametrize("converted, ablation, window, label", [
    ({"ppl_wiki": 10.4, "decode_cache_mib": 5.0}, None, 0, "GO"),
    ({"ppl_wiki": 10.6, "decode_cache_mib": 5.0}, None, 0, "NO-GO"),  # quality
    ({"ppl_wiki": 10.0, "decode_cache_mib": 90.0}, None, 0, "NO-GO"),  # memory
    ({"ppl_wiki": 10.4, "decode_cache_mib": 5.0}, None, 64, "n/a"),  # hybrid, share unmeasured
    ({"ppl_wiki": 10.4, "decode_cache_mib": 5.0}, {"ppl_wiki": 20.0}, 64, "GO"),  # the variant closes 96%
    ({"ppl_wiki": 10.4, "decode_cache_mib": 5.0}, {"ppl_wiki": 10.5}, 64, "NO-GO"),  # the window does the work
])
def test_conversion_verdict(converted, ablation, window, label):
    assert conversion_verdict(T, converted, ablation, window).label == label


def test_variant_share():
    assert variant_share(10.0, 10.0, 20.0) == 1.0 and variant_share(10.0, 20.0, 20.0) == 0.0
    assert variant_share(10.0, 12.0, 9.0) == 0.0  # window alone better than the teacher: no gap to close


def test_passkey_oracle_scores_one_and_a_shuffled_answer_scores_zero():
    tok = AutoTokenizer.from_pretrained(smollm2_path())
    key_of = lambda ids: re.search(r"pass key is (\d{5})", tok.decode(ids[0])).group(1)  # noqa: E731
    oracle = lambda prompts: [key_of(ids) for ids in prompts]  # noqa: E731
    keys = []

    def shuffled(prompts):  # answers with the previous prompt's key
        out = []
        for ids in prompts:
            keys.append(key_of(ids))
            out.append(keys[-2] if len(keys) > 1 else "00000")
        return out

    lengths = (128, 256)
    assert passkey_accuracy(oracle, tok, lengths, samples=20, batch_size=7) == {128: 1.0, 256: 1.0}
    assert max(passkey_accuracy(shuffled, tok, lengths, samples=20, batch_size=3).values()) <= 0.1
    sizes = []
    passkey_accuracy(lambda b: sizes.extend(x.shape[1] for x in b) or [""] * len(b), tok, (512,), samples=3)
    assert len(sizes) == 3 and all(480 <= n <= 530 for n in sizes), sizes


@pytest.mark.parametrize("attention", ["sdpa", "holo"])
def test_batched_passkey_answers_equal_one_at_a_time(attention):
    """Left-padded batches answer as single prompts do (holo: with a window hybrid and its sinks)."""
    model, tok = load_smollm2(attention)
    if attention == "holo":
        hf_attn.set_window(model, 16)
    rng = random.Random(0)
    prompts = [passkey_prompt(tok, n, rng)[0] for n in (60, 90, 75)]
    answer = greedy_answer(model, tok, new_tokens=4)
    assert answer(prompts) == [answer([p])[0] for p in prompts]


RELOAD = """
import sys, torch, hf_attn
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    torch.save(m(input_ids=torch.arange(5, 21)[None]).logits, sys.argv[2])
"""


def test_convert_end_to_end_reload_and_push(tmp_path, smollm2_toy, hub, capsys):
    out = tmp_path / "conv"
    args = ["convert", str(smollm2_toy), "--to", "gauge", "--transfer-steps", "3", "--recover-steps", "3",
            "--seq-len", "128", "--batch-size", "1", "--out", str(out), "--device", "cpu", "--eval-windows", "2",
            "--passkey-lengths", "128", "--passkey-samples", "2", "--decode-context", "64", "--decode-steps", "2"]
    assert main(args) == 0, capsys.readouterr().err
    for stage in ("transfer", "recover"):
        assert json.loads((out / stage / "run.json").read_text())["objective"] in ("transfer", "distill")
        assert (out / stage / "final.json").is_file()
    report = (out / "report.md").read_text()
    assert "GO/NO-GO" in report and "unconverted swap" in report and "window-only ablation" in report
    assert "not applicable: no window" in report  # gauge has no window hybrid
    assert "hf-attn convert" in report and (out / "convert.png").stat().st_size
    data = json.loads((out / "report.json").read_text())
    assert set(data["models"]) == {"teacher (sdpa)", "converted", "window-only ablation", "unconverted swap"}
    results = json.loads((out / "final" / "eval_results.json").read_text())
    assert results["conversion"]["verdict"] == data["verdict"]

    import hf_attn  # noqa: F401
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "final").eval()
    assert model.config._attn_implementation == "gauge" and model.hf_attn_wrapper.config.wrapper_type == "gauge"
    with torch.no_grad():
        here = model(input_ids=torch.arange(5, 21)[None]).logits
    subprocess.run([sys.executable, "-c", RELOAD, str(out / "final"), str(tmp_path / "l.pt")], check=True)
    torch.testing.assert_close(torch.load(tmp_path / "l.pt"), here, rtol=0, atol=0)

    push = ["push", str(out), "--repo-id", "user/toy-gauge", "--endpoint", hub.url, "--token", hub.token]
    assert main(push) == 0, capsys.readouterr().err
    from huggingface_hub import hf_hub_download

    card = open(hf_hub_download("user/toy-gauge", "README.md", endpoint=hub.url, token=hub.token,
                                cache_dir=tmp_path / "hub-cache")).read()
    assert "conversion" in card


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes" / "convert").glob("*.yaml")), ids=lambda p: p.name)
def test_conversion_recipes_load_and_name_their_objective(recipe):
    from hf_attn.train import TrainConfig

    cfg = TrainConfig.from_yaml(recipe)
    assert cfg.train.objective in ("transfer", "distill") and cfg.task == "token"
    assert (cfg.train.objective == "distill") == (cfg.model.lora_rank is not None)


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes" / "convert").glob("*.yaml")), ids=lambda p: p.name)
def test_conversion_recipes_are_what_convert_runs(recipe):
    """Each shipped recipe is the stage `hf-attn convert smollm2 --to V [--window W]` runs with its defaults, so
    changing a default (a learning rate, the sinks) cannot leave the recipes behind."""
    import yaml

    from hf_attn.harness.convert import ConvertSettings, stage_recipes

    shipped = yaml.safe_load(recipe.read_text())
    variant, stage = recipe.stem.split("_")[1:]
    window = shipped["model"]["attention_config"].get("hf_attn_window", 0)
    settings = ConvertSettings(to=variant, window=window, out=f"runs/smollm2-{variant}")
    assert shipped == stage_recipes(settings)[stage]


def test_window_and_sinks_reach_both_stages(monkeypatch):
    """`--window 16 --sinks 2` lands in both stages' model config (so in `final/`), and the report names them."""
    from hf_attn.cli import build_parser
    from hf_attn.harness import convert as conv
    from hf_attn.harness.convert import ConvertSettings, report_lines, stage_recipes

    args = build_parser().parse_args(["convert", "smollm2", "--to", "holo", "--window", "16", "--sinks", "2"])
    settings = ConvertSettings(**{k: v for k, v in vars(args).items() if k in ConvertSettings.__dataclass_fields__})
    recipes = stage_recipes(settings)
    assert [r["model"]["attention_config"] for r in recipes.values()] == [
        {"hf_attn_window": 16, "hf_attn_window_sinks": 2}] * 2
    monkeypatch.setattr(conv, "hardware", lambda device: "cpu")
    assert "16-token softmax window and 2 sink tokens" in "\n".join(
        report_lines(settings, {}, conv.Verdict(None, "n/a"), torch.device("cpu")))
