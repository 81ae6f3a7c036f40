"""`hf-attn push` (hf_attn/commands/push.py): dry run, upload through the test Hub, wrong token."""
import json

from hf_attn.cli import main
from harness import tiny_model
from run_folder import make_run_dir


def test_push_dry_run_then_upload(hub, tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", tiny_model("qwen3", "holo"))
    dry = tmp_path / "dry"
    assert main(["push", str(run), "--repo-id", "user/cli", "--dry-run", str(dry), "--license", "mit"]) == 0
    out = capsys.readouterr().out
    assert "Dry run: would upload to user/cli" in out and "plots/loss.png" in out and "optimizer.pt" in out
    assert json.loads((dry / "config.json").read_text())["model_type"] == "hf_attn_qwen3"
    assert "license: mit" in (dry / "README.md").read_text()
    assert not hub.repo_exists("user/cli")

    args = ["push", str(run), "--repo-id", "user/cli", "--endpoint", hub.url, "--token", hub.token,
            "--commit-message", "from the CLI", "--private"]
    assert main(args) == 0
    assert "Pushed to" in capsys.readouterr().out
    assert set(hub.files("user/cli")) == {p.relative_to(dry).as_posix() for p in dry.rglob("*") if p.is_file()}


def test_push_wrong_token(hub, tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", tiny_model("llama", "holo"))
    assert main(["push", str(run / "final"), "--repo-id", "user/cli-bad", "--endpoint", hub.url,
                 "--token", "hf_nope"]) == 2
    assert "refused the token" in capsys.readouterr().err
    assert not hub.repo_exists("user/cli-bad")


def test_push_dry_run_into_a_non_empty_folder_deletes_nothing(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", tiny_model("llama", "holo"))
    dry = tmp_path / "dry"
    dry.mkdir()
    (dry / "thesis.tex").write_text("years of work")
    assert main(["push", str(run), "--repo-id", "user/cli", "--dry-run", str(dry)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in dry.iterdir()] == ["thesis.tex"]
