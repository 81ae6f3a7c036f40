"""`hf-attn push RUN_DIR --repo-id user/name`: upload a checkpoint with its model card to the Hub."""
from __future__ import annotations


def run(args) -> int:
    from hf_attn.hub import push_folder

    result = push_folder(
        args.run_dir, args.repo_id, private=args.private or None, revision=args.revision,
        commit_message=args.commit_message, token=args.token, endpoint=args.endpoint, dry_run=args.dry_run,
        base_model=args.base_model, license=args.license, datasets=args.dataset or None,
    )
    if args.dry_run:
        files = sorted(str(p.relative_to(result)) for p in result.rglob("*") if p.is_file())
        print(f"Dry run: would upload to {args.repo_id}, staged in {result}:\n  " + "\n  ".join(files))
    else:
        print(f"Pushed to {result.commit_url}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "push", help="upload a checkpoint (or wrapper-only folder) with a generated model card to the Hub",
        description="Upload RUN_DIR's checkpoint (config.json + safetensors, or a save_wrapper folder) with a "
        "model card built from the run's config.yaml, metrics.csv, eval/diagnostics JSON and plots. The token "
        "comes from --token, HF_TOKEN or `hf auth login`; the Hub from --endpoint or HF_ENDPOINT.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (with a checkpoint sub-folder) or a checkpoint folder")
    p.add_argument("--repo-id", required=True, help="target repository, 'user/name'")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", help="branch to push to (created if missing; default main)")
    p.add_argument("--commit-message", help="commit message (default: 'Upload NAME with hf-attn')")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    p.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    p.add_argument("--dry-run", metavar="DIR", help="write the folder that would be uploaded to DIR; upload nothing")
    p.add_argument("--base-model", help="Hub id of the base model for the card (default: from the run/config)")
    p.add_argument("--license", help="licence id of the base model for the card metadata (default: known or 'other')")
    p.add_argument("--dataset", action="append", help="Hub id of a training dataset (repeatable)")
    p.set_defaults(func=run)
