"""`hf-attn probe MODEL`: the weight-geometry probes (docs/probes.md), JSON + a page of plots."""
from __future__ import annotations

import time
from pathlib import Path


def _load(model_ref: str):
    import torch
    from transformers import AutoModel

    from hf_attn.utils import HfAttnError

    if model_ref.lower() == "smollm2":
        from hf_attn.assets import smollm2_path

        model_ref = str(smollm2_path())
    try:
        return AutoModel.from_pretrained(model_ref, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise HfAttnError(
            f"Could not load '{model_ref}' ({e.__class__.__name__}: {str(e).splitlines()[0]}). Pass a local "
            "folder written by save_pretrained, a cached hub id, or 'smollm2' for the bundled SmolLM2-135M."
        ) from e


def run(args) -> int:
    import torch

    from hf_attn.probes import ProbeOptions, run_probes

    if args.threads:
        torch.set_num_threads(args.threads)
    options = ProbeOptions(embedding_rows=args.embedding_rows, simplices=args.simplices,
                           max_layers=args.max_layers, seed=args.seed)
    start = time.perf_counter()
    model = _load(args.model)
    result = run_probes(model, args.out, options, progress=not args.quiet)
    print(f"\n{result['model']}: probes in {time.perf_counter() - start:.1f} s -> {Path(args.out) / 'probes.json'}, "
          f"{Path(args.out) / 'probes.png'}")
    for key, value in result["summary"].items():
        print(f"  {key:45s} {value:.4f}" if isinstance(value, float) else f"  {key:45s} {value}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("probe", help="weight-geometry probes (spectra, effective rank, sparsity, CV) of a model")
    p.add_argument("model", help="folder or hub id loadable with AutoModel, or 'smollm2'")
    p.add_argument("--out", default="probe_out", help="output folder for probes.json and probes.png")
    p.add_argument("--embedding-rows", type=int, default=20000, help="embedding rows for the covariance spectrum")
    p.add_argument("--simplices", type=int, default=1000, help="random pentachora for the embedding CV")
    p.add_argument("--max-layers", type=int, default=None, help="evenly spaced blocks per stack for SVD/QK (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
