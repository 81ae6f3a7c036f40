"""`hf-attn convert MODEL --to VARIANT`: linearize a pretrained model (attention transfer + LoRA distillation)."""
from __future__ import annotations

import argparse
import shlex


def run(args: argparse.Namespace) -> int:
    from ..harness.convert import ConvertSettings, convert
    from ..registry import get_variant

    get_variant(args.to)  # fail fast on a bad name
    fields = {k: v for k, v in vars(args).items() if k in ConvertSettings.__dataclass_fields__}
    fields["passkey_lengths"] = tuple(args.passkey_lengths)
    fields["command"] = command_line(args)
    run_dir = convert(ConvertSettings(**fields))
    print(f"Wrote {run_dir}/final (from_pretrained after `import hf_attn`), {run_dir}/report.md")
    print((run_dir / "report.md").read_text().split("## Models")[0].split("## GO/NO-GO")[1].strip())
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The command with every option spelled out, for the report (what reproduces each figure)."""
    opts = [f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else shlex.quote(str(v))}"
            for k, v in vars(args).items() if k not in ("model", "func", "command")]
    return f"hf-attn convert {shlex.quote(args.model)} " + " ".join(opts)


def register(sub) -> None:
    from ..harness.convert import ConvertSettings as S

    p = sub.add_parser(
        "convert", help="convert a pretrained softmax model to a linear-time variant (LoLCATs-style) and report",
        description="Stage 1 trains the variant's learnable parts to match softmax attention layer by layer "
        "(RUN/transfer); stage 2 distils the softmax model into the converted one through a LoRA that is merged "
        "(RUN/recover). Writes RUN/final (push it with `hf-attn push RUN`) and RUN/report.md. See docs/conversion.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", help="'smollm2' (offline SmolLM2-135M) or a from_pretrained folder")
    p.add_argument("--to", required=True, help="the variant to convert to (`hf-attn variants`)")
    p.add_argument("--window", type=int, default=S.window, help="softmax sliding window of the hybrid; 0 = none")
    p.add_argument("--sinks", type=int, default=S.sinks,
                   help="with --window: the first tokens kept in the softmax part (attention sinks)")
    p.add_argument("--transfer-steps", type=int, default=S.transfer_steps, help="stage 1 steps (0 = skip)")
    p.add_argument("--recover-steps", type=int, default=S.recover_steps, help="stage 2 (LoRA distillation) steps")
    p.add_argument("--seq-len", type=int, default=S.seq_len, help="tokens per training/eval window")
    p.add_argument("--batch-size", type=int, default=S.batch_size, help="windows per step")
    p.add_argument("--lora-rank", type=int, default=S.lora_rank, help="LoRA rank of stage 2 (q/k/v/o)")
    p.add_argument("--lr", type=float, default=S.lr,
                   help="peak learning rate of stage 1 (the variant's parts; 1e-3 left them near their start)")
    p.add_argument("--recover-lr", type=float, default=S.recover_lr,
                   help="peak learning rate of stage 2 (LoRA; 1e-3 diverged on SmolLM2 holo + window 64)")
    p.add_argument("--out", default=S.out, help="run folder")
    p.add_argument("--device", default=S.device, help="auto, cpu or cuda (evaluation)")
    p.add_argument("--eval-windows", type=int, default=S.eval_windows, help="held-out windows per perplexity")
    p.add_argument("--passkey-lengths", type=int, nargs="+", default=list(S.passkey_lengths),
                   help="passkey prompt lengths in tokens")
    p.add_argument("--passkey-samples", type=int, default=S.passkey_samples, help="passkey prompts per length")
    p.add_argument("--decode-context", type=int, default=S.decode_context, help="context before timing decoding")
    p.add_argument("--decode-steps", type=int, default=S.decode_steps, help="timed decode steps")
    p.set_defaults(func=run)
