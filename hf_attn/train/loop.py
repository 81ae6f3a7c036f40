"""The training loop: one `Accelerator`, read top to bottom like nanoGPT's.

The same code runs on one CPU, one GPU, several GPUs (DDP) and FSDP; `accelerate launch` picks which.
Each process draws its own batches (`data.train_batch(step, micro, rank)`), so the global batch is
`batch_size x grad_accum x processes`. The LR schedule is stepped once per optimizer step by us, not by
accelerate (whose prepared scheduler steps once per process).

A run ends with `run/final/`, the trained model as `hf_attn.save_pretrained` writes it (see rundir.py for the
whole folder). The main process holds `run/.lock` for the whole run, so two trainings never share a folder.
"""
from __future__ import annotations

import math
import platform
import resource
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..diagnostics import collect, summarize
from ..evaluate import metrics, token_loss
from ..utils import HfAttnError
from .checkpoint import latest_checkpoint, restore_checkpoint, save_checkpoint, save_final
from .config import TrainConfig
from .data import Batch, TaskData, build_data
from .models import build_model, load_tokenizer, param_groups, parameter_counts
from .objectives import build_objective
from .rundir import JsonRows, MetricsCsv, run_lock, write_config, write_error, write_json


def lr_lambda(cfg: TrainConfig):
    """Multiplier of the peak LR at each step: linear warmup, then cosine/linear decay to min_lr_ratio."""
    o, total = cfg.optim, cfg.train.steps

    def f(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        frac = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * frac)) if o.schedule == "cosine" else 1 - frac
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * shape

    return f


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory since start: CUDA allocator peak on GPU, process max RSS on CPU (a coarse upper bound)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if platform.system() == "Darwin" else 2**10), "cpu_max_rss"


def batch_to(batch: Batch, device) -> dict[str, torch.Tensor]:
    """The batch as model keyword arguments on `device`."""
    return {"input_ids": batch.input_ids.to(device), "labels": batch.labels.to(device)}


@torch.no_grad()
def evaluate(model, data: TaskData, accelerator: Accelerator, task: str) -> dict[str, float]:
    """Held-out metrics over `eval_batches` fixed batches, sharded over processes and summed."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss sum, tokens, correct
    for i in range(accelerator.process_index, data.cfg.data.eval_batches, accelerator.num_processes):
        b = batch_to(data.eval_batch(i), accelerator.device)
        with accelerator.autocast():
            totals += token_loss(model, b["input_ids"], b["labels"])
    totals = accelerator.reduce(totals, reduction="sum")
    model.train()
    return metrics(totals[0].item(), int(totals[1].item()), int(totals[2].item()), task)


def token_budget(data: TaskData, planned: int) -> dict[str, int | None]:
    """Training tokens the split holds and tokens the run reads (windows are random, so some repeat)."""
    available = getattr(data, "train_ids", None)
    return {"train_tokens_available": None if available is None else int(available.numel()),
            "train_tokens_seen": planned}


def param_checksum(model) -> float:
    """Sum of every parameter in float64: equal across ranks when DDP keeps them in sync."""
    return float(sum(p.detach().double().sum().item() for p in model.parameters()))


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Run `cfg` to completion (continuing from the last checkpoint when `resume`); returns final.json's dict."""
    # cpu=True on machines without CUDA: accelerate then joins torchrun-launched processes over gloo
    # (otherwise `accelerate launch --num_processes 2` on CPU gives two unrelated single-process runs).
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, gradient_accumulation_steps=cfg.optim.grad_accum,
                              cpu=not torch.cuda.is_available())
    with run_lock(cfg.run_dir, enabled=accelerator.is_main_process):
        return _train(cfg, accelerator, resume)


def _train(cfg: TrainConfig, accelerator: Accelerator, resume: bool) -> dict:
    """The loop itself, run while the main process holds the run folder's lock."""
    run_dir = cfg.run_dir
    if not resume and latest_checkpoint(run_dir) is not None:
        raise HfAttnError(f"{run_dir} already holds checkpoints: pass --resume to continue, or another out_dir.")
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg) if cfg.task == "token" else None
    data = build_data(cfg, tokenizer)
    objective = build_objective(cfg)
    model = objective.prepare(build_model(cfg, data.vocab_size))
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optim.lr), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    model, optimizer = accelerator.prepare(model, optimizer)  # the scheduler's state is saved as JSON, not pickled
    inner = accelerator.unwrap_model(model)

    tokens_per_step = cfg.data.batch_size * cfg.data.seq_len * cfg.optim.grad_accum * accelerator.num_processes
    metrics, diags = MetricsCsv(run_dir / "metrics.csv"), JsonRows(run_dir / "diagnostics.jsonl")
    start = restore_checkpoint(accelerator, run_dir, scheduler) if resume else 0
    if accelerator.is_main_process:
        with write_error("creating the run folder", run_dir):
            run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, cfg.to_dict())
        metrics.truncate_after(start)
        diags.truncate_after(start)
        metrics.flush()
        diags.flush()
        write_json(run_dir / "run.json", {
            "data": data.description, "quality_metric": data.quality_metric, "vocab_size": data.vocab_size,
            **parameter_counts(inner), "device": accelerator.device.type, "processes": accelerator.num_processes,
            "distributed": accelerator.distributed_type.name, "memory_kind": peak_memory_mb(accelerator.device)[1],
            "mixed_precision": cfg.train.mixed_precision, "tokens_per_step": tokens_per_step,
            "objective": cfg.train.objective, **token_budget(data, tokens_per_step * cfg.train.steps),
            "gpu": torch.cuda.get_device_name(accelerator.device) if accelerator.device.type == "cuda" else None,
        })
    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(accelerator.device)

    def diagnostics(step: int) -> None:
        ids = data.eval_batch(0).input_ids[:2, : cfg.train.diag_tokens].to(accelerator.device)
        out = collect(inner, ids, forward=model)
        if accelerator.is_main_process:
            diags.append({"step": step, **out})

    if start == 0:
        diagnostics(0)  # the state before training: what the collectors' summaries compare against
    window_loss, window_steps, window_time, grad_norm = 0.0, 0, 0.0, None
    stop = cfg.train.stop_at or cfg.train.steps
    bar = tqdm(range(start, stop), initial=start, total=cfg.train.steps, desc=cfg.name,
               disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    for step in bar:
        t0 = time.perf_counter()
        step_loss = torch.zeros((), device=accelerator.device)
        for micro in range(cfg.optim.grad_accum):
            batch = batch_to(data.train_batch(step, micro, accelerator.process_index), accelerator.device)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = objective.loss(model, inner, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.optim.max_grad_norm:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += loss.detach() / cfg.optim.grad_accum
        scheduler.step()
        done = step + 1
        loss_value = accelerator.reduce(step_loss, reduction="mean").item()
        if not math.isfinite(loss_value):
            if accelerator.is_main_process:
                metrics.flush()
            raise HfAttnError(
                f"{cfg.name}: the training loss is {loss_value} at step {step + 1}; stopping instead of training on "
                f"NaN weights (the run folder keeps the metrics and checkpoints so far). Try train.mixed_precision: "
                f"'no', a lower optim.lr, or optim.max_grad_norm; if it is an attention variant's numerics, please "
                f"report it with this config."
            )
        window_loss += loss_value
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize(accelerator.device)
        window_time += time.perf_counter() - t0
        window_steps += 1

        row = {}
        if done % cfg.train.log_every == 0 or done == cfg.train.steps:
            mem, _ = peak_memory_mb(accelerator.device)
            row = {"step": done, "loss": window_loss / window_steps, "lr": scheduler.get_last_lr()[0],
                   "grad_norm": None if grad_norm is None else float(grad_norm),
                   "tokens_per_s": tokens_per_step * window_steps / window_time, "peak_mem_mb": mem}
            bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
            window_loss, window_steps, window_time = 0.0, 0, 0.0
        if done % cfg.train.eval_every == 0 or done == cfg.train.steps:
            row = {"step": done, **row, **evaluate(model, data, accelerator, cfg.task)}
        if row and accelerator.is_main_process:
            metrics.append(row)
        if done % cfg.train.diag_every == 0 or done == cfg.train.steps:
            diagnostics(done)
        if (cfg.train.save_every and done % cfg.train.save_every == 0) or done == stop:
            save_checkpoint(accelerator, run_dir, done, cfg.train.keep_checkpoints, scheduler)
    if stop < cfg.train.steps:
        accelerator.end_training()
        return {"step": stop, "stopped": True}

    checksums = accelerator.gather(torch.tensor([param_checksum(model)], dtype=torch.float64,
                                                device=accelerator.device)).tolist()
    final = {"step": cfg.train.steps, "param_checksums": checksums, "processes": accelerator.num_processes}
    if accelerator.is_main_process:
        final.update({k: v for k, v in metrics.rows[-1].items() if k.startswith("eval_")} if metrics.rows else {})
    results = {k: v for k, v in final.items() if k.startswith("eval_")}
    save_final(accelerator, objective.finish(inner), run_dir, {"step": cfg.train.steps, "data": data.description, **results}, tokenizer)
    if accelerator.is_main_process:
        write_json(run_dir / "diagnostics_summary.json", summarize(diags.rows, run_dir))
        write_json(run_dir / "final.json", final)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final
