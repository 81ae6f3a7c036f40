"""Push to a Hub-compatible server on 127.0.0.1, reload in a fresh process by repo id, compare logits
(hf_attn/hub.py). The server (tests/hub_server.py) is reached only through huggingface_hub/transformers."""
import json
import subprocess
import sys

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError
from transformers import AutoModelForCausalLM

import hf_attn
from harness import ids, logits, tiny_model
from hub_server import client_env
from toy_wrapper import wrappable, wrapped
from run_folder import make_run_dir

# Runs in a fresh process: only `import hf_attn` (+ the test-only wrapper) and plain from_pretrained by id.
RELOAD = """
import json, sys, torch
import hf_attn, toy_wrapper
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
from harness import ids, logits, tiny_model
cases = json.load(open(sys.argv[1]))
out = {}
for case in cases:
    if case["kind"] == "wrapper_only":
        model = hf_attn.load_wrapper(tiny_model(case["arch"], case["attn"]), case["repo"])
    else:
        auto = AutoModelForSeq2SeqLM if case["arch"] == "t5" else AutoModelForCausalLM
        model = auto.from_pretrained(case["repo"], revision=case.get("revision"))
    out[case["repo"]] = logits(model.eval(), ids(2, 10))
torch.save(out, sys.argv[2])
"""


def _cases():
    """(repo, kind, arch, attn, model) for every round trip: variant, each wrapper, wrapper-only, seq2seq."""
    cases = [("user/llama-holo", "full", "llama", "holo", tiny_model("llama", "holo"))]
    cases += [(f"user/llama-{n}", "full", "llama", "performer", wrapped("llama", n, "performer")) for n in wrappable()]
    cases.append(("user/t5-toy", "full", "t5", "holo", wrapped("t5", "toy_lowrank", "holo")))
    cases.append(("user/toy-wrapper-only", "wrapper_only", "llama", "sdpa", wrapped("llama", "toy_lowrank")))
    return cases


@pytest.fixture(scope="module")
def pushed(hub, tmp_path_factory):
    """Push every case, plus one through the hf-attn class's own `model.push_to_hub`, then reload them all
    in one fresh process; returns `(expected, reloaded)` logits by repo."""
    tmp = tmp_path_factory.mktemp("pushed")
    expected, specs = {}, []
    for repo, kind, arch, attn, model in _cases():
        hf_attn.push_to_hub(model, repo, wrapper_only=kind == "wrapper_only", endpoint=hub.url, token=hub.token)
        expected[repo] = logits(model, ids(2, 10))
        specs.append({"repo": repo, "kind": kind, "arch": arch, "attn": attn})
    # a model loaded from an hf-attn checkpoint pushes itself the hf-attn way
    hf_attn.save_pretrained(wrapped("llama", "toy_lowrank", "holo"), tmp / "local")
    loaded = AutoModelForCausalLM.from_pretrained(tmp / "local")
    loaded.push_to_hub("user/method-push", endpoint=hub.url, token=hub.token)
    expected["user/method-push"] = logits(loaded, ids(2, 10))
    specs.append({"repo": "user/method-push", "kind": "full", "arch": "llama", "attn": "holo"})

    (tmp / "cases.json").write_text(json.dumps(specs))
    (tmp / "reload.py").write_text(RELOAD)
    run = subprocess.run(
        [sys.executable, str(tmp / "reload.py"), str(tmp / "cases.json"), str(tmp / "out.pt")],
        env=client_env(hub, tmp / "home"), capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return expected, torch.load(tmp / "out.pt")


@pytest.mark.parametrize("repo", [c[0] for c in _cases()] + ["user/method-push"])
def test_reload_from_hub_in_fresh_process(pushed, hub, repo):
    expected, reloaded = pushed
    torch.testing.assert_close(reloaded[repo], expected[repo], rtol=0, atol=0)
    # the weights really went over HTTP: the fresh process fetched them from the server
    weights = "hf_attn_wrapper.safetensors" if "wrapper-only" in repo else "model.safetensors"
    assert any(r.startswith(f"GET /{repo}/resolve/") and r.endswith(weights) for r in hub.requests)


def test_uploaded_files_and_card_metadata(pushed, hub, tmp_path):
    files = hub.files("user/llama-toy_lowrank")
    assert set(files) == {"README.md", "config.json", "generation_config.json", "model.safetensors",
                          "hf_attn_wrapper.json", "hf_attn_wrapper.safetensors"}
    card = ModelCard.load(hf_hub_download("user/llama-toy_lowrank", "README.md", endpoint=hub.url,
                                          cache_dir=tmp_path, token=hub.token))
    assert card.data.library_name == "transformers"
    assert {"hf-attn", "performer", "toy_lowrank", "llama"} <= set(card.data.tags)
    assert "pip install hf-attn" in card.text and 'from_pretrained("user/llama-toy_lowrank")' in card.text
    wrapper_only = hub.files("user/toy-wrapper-only")
    assert set(wrapper_only) == {"README.md", "hf_attn_wrapper.json", "hf_attn_wrapper.safetensors"}
    assert b"hf_attn.load_wrapper(base" in wrapper_only["README.md"]


def test_run_folder_push_private_branch(hub, tmp_path):
    run = make_run_dir(tmp_path / "run", tiny_model("llama", "holo"))
    info = hf_attn.push_to_hub(run, "user/run-holo", private=True, revision="dev", commit_message="first upload",
                               endpoint=hub.url, token=hub.token)
    files = hub.files("user/run-holo", "dev")
    assert {"README.md", "config.json", "model.safetensors", "plots/loss.png", "plots/entropy.png"} <= set(files)
    assert "optimizer.pt" not in files
    assert hub.files("user/run-holo", "main") == {}  # the branch got the commit, main did not
    assert hub.store.load("user/run-holo")["commits"][info.oid]["summary"] == "first upload"
    api = HfApi(endpoint=hub.url)
    assert api.model_info("user/run-holo", token=hub.token).private
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("user/run-holo", token=False)
    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.license == "apache-2.0" and card.data.datasets == ["wikimedia/wikipedia"]
    assert "| perplexity/wiki | 17.25 |" in card.text and "![plots/loss.png](plots/loss.png)" in card.text


def test_wrong_token_is_clear_and_uploads_nothing(hub, tmp_path):
    before = len(hub.requests)
    with pytest.raises(hf_attn.HfAttnError, match="refused the token.*HF_TOKEN"):
        hf_attn.push_to_hub(tiny_model("llama", "holo"), "user/never", endpoint=hub.url, token="hf_wrong")
    assert not hub.repo_exists("user/never")
    assert not [r for r in hub.requests[before:] if r.startswith("PUT") or "/commit/" in r or "preupload" in r]


def test_dry_run_writes_the_folder_and_sends_nothing(hub, tmp_path):
    before = len(hub.requests)
    out = hf_attn.push_to_hub(wrapped("llama", "toy_lowrank"), "user/dry", dry_run=tmp_path / "dry",
                              endpoint=hub.url, token=hub.token)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "generation_config.json", "hf_attn_wrapper.json",
        "hf_attn_wrapper.safetensors", "model.safetensors"]
    assert len(hub.requests) == before


def test_stock_config_of_a_variant_run_is_refused(hub, tmp_path):
    run = make_run_dir(tmp_path / "run", tiny_model("llama", "holo"))
    tiny_model("llama", "holo").save_pretrained(run / "final")  # stock save: the variant is lost
    (run / "final" / "config.json").write_text(
        json.dumps({**json.loads((run / "final" / "config.json").read_text()), "model_type": "llama"}))
    with pytest.raises(hf_attn.HfAttnError, match="silently run plain attention"):
        hf_attn.push_to_hub(run, "user/stock", dry_run=tmp_path / "dry")


def test_dry_run_never_empties_a_folder(tmp_path):
    dry = tmp_path / "dry"
    dry.mkdir()
    (dry / "notes.md").write_text("mine")
    with pytest.raises(hf_attn.HfAttnError, match="is not empty.*never deletes"):
        hf_attn.push_to_hub(wrapped("llama", "toy_lowrank"), "user/dry", dry_run=dry)
    assert [p.name for p in tmp_path.iterdir()] == ["dry"] and (dry / "notes.md").read_text() == "mine"
    (dry / "notes.md").unlink()
    out = hf_attn.push_to_hub(wrapped("llama", "toy_lowrank"), "user/dry", dry_run=dry)  # empty: fine
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("kind", ["link out", "fifo", "dangling link"])
def test_push_uploads_only_regular_files_inside_the_checkpoint(tmp_path, kind):
    import os

    hf_attn.save_pretrained(tiny_model("llama", "holo"), tmp_path / "ckpt")
    (tmp_path / "secret.json").write_text('{"token": "hf_secret"}')
    bad = tmp_path / "ckpt" / "extra.json"
    {"link out": lambda: bad.symlink_to(tmp_path / "secret.json"), "fifo": lambda: os.mkfifo(bad),
     "dangling link": lambda: bad.symlink_to(tmp_path / "gone.json")}[kind]()
    with pytest.raises(hf_attn.HfAttnError, match="extra.json is not a regular file inside"):
        hf_attn.push_to_hub(tmp_path / "ckpt", "user/leak", dry_run=tmp_path / "dry")
    assert not (tmp_path / "dry").exists()


def test_links_within_the_checkpoint_and_run_upload_their_targets_only(tmp_path):
    run = make_run_dir(tmp_path / "run", tiny_model("llama", "holo"))
    (run / "final" / "tokenizer.json").write_text("{}")
    (run / "final" / "vocab.json").symlink_to(run / "final" / "tokenizer.json")  # inside: uploaded
    (tmp_path / "private.png").write_bytes(b"\x89PNG private")
    (run / "plots" / "private.png").symlink_to(tmp_path / "private.png")  # outside: not a plot of this run
    out = hf_attn.push_to_hub(run, "user/links", dry_run=tmp_path / "dry")
    assert (out / "vocab.json").read_text() == "{}" and not (out / "vocab.json").is_symlink()
    assert (out / "plots" / "entropy.png").is_file() and not (out / "plots" / "private.png").exists()


@pytest.mark.parametrize("wrapper_only", [False, True])
def test_push_of_an_unknown_wrapper_is_a_clear_error(tmp_path, wrapper_only):
    model = wrapped("llama", "toy_lowrank")
    if wrapper_only:
        hf_attn.save_wrapper(model, tmp_path / "ckpt")
        file = tmp_path / "ckpt" / "hf_attn_wrapper.json"
    else:
        hf_attn.save_pretrained(model, tmp_path / "ckpt")
        file = tmp_path / "ckpt" / "config.json"
    data = json.loads(file.read_text())
    (data.get("hf_attn_wrapper") or data)["wrapper_type"] = "future_wrapper"
    file.write_text(json.dumps(data))
    with pytest.raises(hf_attn.HfAttnError, match="needs the hf-attn wrapper 'future_wrapper'.*Upgrade hf-attn"):
        hf_attn.push_to_hub(tmp_path / "ckpt", "user/future", dry_run=tmp_path / "dry")
