"""RecurrentCache: generate with constant-size state gives the tokens and logits of full forwards."""
from types import SimpleNamespace

import pytest
import torch

import hf_attn
from hf_attn.attention.holo.math import dft_matrices
from hf_attn.utils import CACHE_KWARG
from harness import ids, recurrent_generate_gap, tiny_model


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("variant", ["holo", "performer"])
def test_recurrent_cache_equals_full_forward(arch, variant):
    same, gap = recurrent_generate_gap(tiny_model(arch, variant))
    assert same and gap < 1e-4


def test_state_size_does_not_grow():
    model = tiny_model("llama", "holo")
    cache = hf_attn.RecurrentCache()
    with torch.no_grad():
        model(input_ids=ids(1, 5), **{CACHE_KWARG: cache}, use_cache=True)
        size = cache.state_bytes()
        for _ in range(3):
            model(input_ids=ids(1, 1, seed=9), **{CACHE_KWARG: cache}, use_cache=True)
    assert cache.state_bytes() == size > 0 and cache.get_seq_length() == 8


def test_mixing_variants_on_one_cache_is_refused():
    cache = hf_attn.RecurrentCache()
    with torch.no_grad():
        tiny_model("llama", "holo")(input_ids=ids(1, 4), **{CACHE_KWARG: cache}, use_cache=True)
        with pytest.raises(hf_attn.HfAttnError, match="fresh RecurrentCache"):
            tiny_model("llama", "performer")(input_ids=ids(1, 1), **{CACHE_KWARG: cache}, use_cache=True)


@pytest.mark.parametrize("variant", ["holo", "performer"])
def test_recurrent_state_refuses_non_causal_calls(variant):
    """An encoder (or a T5 position_bias / 4D-mask call) cannot be served by a running causal state."""
    from hf_attn.cache import RecurrentLayer

    q, k, v = (torch.randn(1, 2, 3, 16) for _ in range(3))
    k, v = RecurrentLayer().update(k, v)  # tags k with its layer, as transformers' cache.update does
    encoder = SimpleNamespace(is_causal=False, layer_idx=0, training=False, config=SimpleNamespace())
    with pytest.raises(hf_attn.HfAttnError, match="RecurrentCache needs causal self-attention"):
        hf_attn.get_variant(variant).function(encoder, q, k, v, None)


@pytest.mark.parametrize("prefill_kernel,decode_kernel", [(True, True), (True, False), (False, True)])
def test_holo_state_continues_across_paths(prefill_kernel, decode_kernel, monkeypatch):
    """The kernels keep holo's state packed, the PyTorch path as [Re | Im]; either continues the other's cache
    (on CUDA where there is one; on the CPU the Triton kernels run under the interpreter)."""
    from hf_attn.attention.holo import attention as holo

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = tiny_model("llama", "holo").to(device)
    tokens = ids(1, 9, seed=3).to(device)
    cache = hf_attn.RecurrentCache()
    steps = []
    with torch.no_grad():
        monkeypatch.setattr(holo, "kernels_enabled", lambda x: prefill_kernel)
        model(input_ids=tokens[:, :6], **{CACHE_KWARG: cache}, use_cache=True)
        assert ("packed" in cache.layers[0].state) == prefill_kernel
        monkeypatch.setattr(holo, "kernels_enabled", lambda x: decode_kernel)
        for t in range(6, 9):
            steps.append(model(input_ids=tokens[:, t:t + 1], **{CACHE_KWARG: cache}, use_cache=True).logits[:, -1])
        assert ("packed" in cache.layers[0].state) == decode_kernel
        monkeypatch.setattr(holo, "kernels_enabled", lambda x: False)
        full = model(input_ids=tokens).logits[:, 6:]
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-4, atol=1e-4)


def decode_step_ops(monkeypatch, variant: str, head_dim: int, kernels: bool = True, **config):
    """Aten ops and Triton launches (stand-ins that only record their names) of a second one-token call on
    the kernel path (the PyTorch path with `kernels=False`), run on CPU. Returns (op names, launch names of both
    calls, the layer's cache)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from hf_attn.cache import RecurrentLayer
    from hf_attn.attention.holo import attention as holo, kernel as holo_triton
    from hf_attn.attention.performer import attention as performer, kernel as performer_triton
    from hf_attn.kernels import scan

    ops, launches = [], []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.append(func.__name__)
            return func(*args, **(kwargs or {}))

    class Launch:  # stands in for a Triton kernel: the count is about the host-side ops around the launches
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            return lambda *a, **kw: launches.append(self.name)

    for module in (holo_triton, performer_triton):
        for name in ("_fwd_state", "_fwd"):
            monkeypatch.setattr(module, name, Launch(name))
    monkeypatch.setattr(scan, "_scan_blocks", Launch("_scan_blocks"))
    monkeypatch.setattr({"holo": holo, "performer": performer}[variant], "kernels_enabled", lambda x: kernels)
    module = SimpleNamespace(is_causal=True, layer_idx=0, training=False, config=SimpleNamespace(**config))
    layer = RecurrentLayer()
    fn = hf_attn.get_variant(variant).function
    for step in range(2):
        q, k, v = (torch.randn(1, 4, 1, head_dim) for _ in range(3))
        k, v = layer.update(k, v)
        with Count() if step else torch.no_grad():
            fn(module, q, k, v, None)
    return ops, launches, layer


def test_holo_kernel_decode_step_issues_few_ops(monkeypatch):
    """Decoding is host-bound on a GPU (the device machine's CPU spends ~0.1 ms per PyTorch op), so the kernel
    path's per-token work around its Triton launches stays small: the state stays in the kernels' layout
    between tokens (48 aten ops per layer and token when it was converted both ways, 12 without), and a
    one-block call skips the block-sum pass and the scan (9 ops and one launch instead of three)."""
    ops, launches, layer = decode_step_ops(monkeypatch, "holo", 32)
    assert "packed" in layer.state and len(ops) <= 9, ops
    assert launches == ["_fwd", "_fwd"], launches  # one launch per token


def test_performer_kernel_decode_step_issues_few_ops(monkeypatch):
    """The performer decode step on the kernel path: with features of the kernels' tile size (m = 256, D = 64,
    the default on SmolLM2) the carried state goes to the scan as it is, without zero-padded copies (4 more
    ops per layer and token, each ~0.1 ms of host time on the device machine)."""
    ops, launches, _ = decode_step_ops(monkeypatch, "performer", 64, performer_num_features=256)
    assert launches[3:] == ["_fwd_state", "_scan_blocks", "_fwd"], launches  # one scan for the state pair
    assert not {"zeros", "fill_", "copy_"} & {op.split(".")[0] for op in ops}, ops
    assert len(ops) <= 16, ops


@pytest.mark.parametrize(("variant", "most"), [("holo", 2), ("performer", 4)])
def test_pytorch_decode_step_runs_few_matmuls(monkeypatch, variant, most):
    """A one-token step on the PyTorch path (what compiled decoding runs: each matmul is a GEMM launch per layer
    and token in its CUDA graph): holo takes the spectra of q, k and v in one matmul and adds the new pair to
    its state without a prefix-sum matmul (2 in all, 5 before); performer reads its key stabiliser as a
    constant instead of recomputing a norm of its features."""
    ops, launches, _ = decode_step_ops(monkeypatch, variant, 64, kernels=False)
    names = [op.split(".")[0] for op in ops]
    assert not launches and sum(n in {"mm", "bmm", "addmm", "baddbmm"} for n in names) <= most, names
    assert "linalg_vector_norm" not in names and "norm" not in names, names


@pytest.mark.parametrize("attn", ["sdpa", "eager", "gauge"])
def test_attention_without_a_recurrent_form_is_refused(attn):
    """sdpa/eager/gauge would see only the new keys and decode other tokens than a full forward."""
    model = tiny_model("llama", attn)
    with torch.no_grad(), pytest.raises(hf_attn.HfAttnError, match="did not use the RecurrentCache.*DynamicCache"):
        model.generate(input_ids=ids(1, 5), **{CACHE_KWARG: hf_attn.RecurrentCache()}, max_new_tokens=4,
                       do_sample=False, pad_token_id=0)


def test_a_switch_away_mid_generation_is_refused_before_a_wrong_token():
    model = tiny_model("llama", "holo")
    cache = hf_attn.RecurrentCache()
    with torch.no_grad():
        model(input_ids=ids(1, 5), **{CACHE_KWARG: cache}, use_cache=True)
        hf_attn.set_attention(model, "sdpa")
        with pytest.raises(hf_attn.HfAttnError, match="Layer 0's attention did not use"):
            model(input_ids=ids(1, 1, seed=9), **{CACHE_KWARG: cache}, use_cache=True)


@pytest.mark.parametrize("variant", ["holo", "performer"])
def test_sliding_window_counts_the_tokens_in_the_state(variant):
    """Mistral/Qwen2 with `sliding_window`: decoding past the window would silently attend to everything."""
    model = tiny_model("mistral", variant)
    model.config.sliding_window = 8
    with torch.no_grad(), pytest.raises(hf_attn.HfAttnError, match="sliding window of 8 tokens.*covers 9 keys"):
        model.generate(input_ids=ids(1, 6), **{CACHE_KWARG: hf_attn.RecurrentCache()}, max_new_tokens=6,
                       do_sample=False, pad_token_id=0)


def _padded_prompt():
    prompt = ids(2, 7, seed=5)
    mask = torch.ones_like(prompt)
    mask[1, :3] = 0  # left padding
    return prompt, mask


def _generate(model, cache, new: int = 8, **kw):
    """Greedy `generate` from a left-padded batch of 2: (sequences, scores (B, new, V))."""
    prompt, mask = _padded_prompt()
    with torch.no_grad():
        gen = model.generate(input_ids=prompt, attention_mask=mask, **{CACHE_KWARG: cache}, max_new_tokens=new,
                             do_sample=False, output_scores=True, return_dict_in_generate=True, pad_token_id=0, **kw)
    return gen.sequences, torch.stack(gen.scores, 1)


def _full_forward(model, sequences, new: int) -> torch.Tensor:
    """Logits of one full forward over the generated sequences at the `new` generated positions."""
    _, mask = _padded_prompt()
    full_mask = torch.cat([mask, torch.ones(2, new, dtype=mask.dtype)], 1)[:, :-1]
    pos = (full_mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        return model(input_ids=sequences[:, :-1], attention_mask=full_mask, position_ids=pos).logits[:, -new:]


@pytest.mark.parametrize("variant", ["holo", "performer"])
def test_static_state_matches_dynamic_cache_and_full_forward(variant):
    """In-place state at fixed addresses decodes the tokens and logits of the dynamic cache and of a full
    forward (GQA Llama, left-padded batch of 2, 8 new tokens), and the tensors never move."""
    model = tiny_model("llama", variant)
    cache = hf_attn.RecurrentCache(static=True)
    seqs, static = _generate(model, cache)
    _, dynamic = _generate(model, hf_attn.RecurrentCache())
    torch.testing.assert_close(static, dynamic, rtol=0, atol=0)
    torch.testing.assert_close(static, _full_forward(model, seqs, 8), rtol=1e-4, atol=1e-4)
    assert cache.is_compileable and not hf_attn.RecurrentCache().is_compileable
    assert int(cache.get_seq_length()) == 7 + 8 - 1
    layer = cache.layers[0]
    where = {k: v.data_ptr() for k, v in layer.state.items()}
    with torch.no_grad():
        model(input_ids=seqs[:, -1:], **{CACHE_KWARG: cache}, use_cache=True)
        layer.batch_select_indices(torch.tensor([1, 0]))  # same shape: reordered in place
    assert {k: v.data_ptr() for k, v in layer.state.items()} == where


@pytest.mark.parametrize("variant", ["holo", "performer"])
def test_static_cache_reset_reuses_its_tensors(variant):
    """A second `generate` on the same static cache starts afresh (same logits) in the same tensors."""
    model = tiny_model("llama", variant)
    cache = hf_attn.RecurrentCache(static=True)
    _, first = _generate(model, cache, new=3)
    where = {k: v.data_ptr() for k, v in cache.layers[1].state.items()}
    cache.reset()
    assert int(cache.get_seq_length()) == 0 and not cache.layers[1].state
    _, second = _generate(model, cache, new=3)
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    assert {k: v.data_ptr() for k, v in cache.layers[1].state.items()} == where


@pytest.mark.parametrize(("window", "sinks"), [(0, 0), (4, 4), (16, 4), (4, 8)])
@pytest.mark.parametrize("variant", ["holo", "performer"])
def test_compiled_decoding_step_matches_full_forward(variant, window, sinks):
    """`generate` compiles the decoding step by itself for a static cache (on CUDA; `_compile_all_devices` forces
    it here): one graph, no graph break, no recompilation over 8 steps, and the logits of a full forward. The
    aot_eager backend functionalises the in-place state updates as inductor does, in seconds on a CPU. Window
    hybrids too: the window full after the prompt (4), never full (16 > 15 tokens), and rows that find their last
    sinks inside the compiled steps (8 sinks, prompts of 4 and 7 real tokens)."""
    from torch._dynamo.utils import counters
    from transformers import CompileConfig

    model = tiny_model("llama", variant)
    if window:
        hf_attn.set_window(model, window, mix=0.5, sinks=sinks)
    config = CompileConfig(backend="aot_eager", fullgraph=True, mode=None)
    config._compile_all_devices = True
    torch._dynamo.reset()
    counters.clear()
    seqs, scores = _generate(model, hf_attn.RecurrentCache(static=True), compile_config=config)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["recompiles"], dict(counters)
    torch.testing.assert_close(scores, _full_forward(model, seqs, 8), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("window", [0, 4])
def test_inductor_compiled_decoding_step_matches_full_forward(window):
    """The same with inductor, the backend `generate` uses by default (CPU: no CUDA graphs), also for a window
    hybrid (whose one-token step, too, must read only the updated state: torch 2.11's inductor writes it early)."""
    from transformers import CompileConfig

    model = tiny_model("llama", "performer")
    if window:
        hf_attn.set_window(model, window, mix=0.5)
    config = CompileConfig(fullgraph=True, mode="default")
    config._compile_all_devices = True
    torch._dynamo.reset()
    seqs, scores = _generate(model, hf_attn.RecurrentCache(static=True), compile_config=config)
    torch.testing.assert_close(scores, _full_forward(model, seqs, 8), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["holo", "performer"])
def test_a_preallocated_key_cache_is_refused_with_the_fix(variant):
    """transformers' StaticCache (a plain model under `cache_implementation="static"`) holds empty key slots past
    the current token, which a linear-time variant would read as keys (its tokens then differed from the dynamic
    cache's): the mask builder refuses it at the prefill and names RecurrentCache."""
    model = tiny_model("llama", variant)
    with pytest.raises(hf_attn.HfAttnError, match=r"[67] key slots for 5 tokens.*RecurrentCache\(static=True\)"):
        model.generate(ids(1, 5), max_new_tokens=2, do_sample=False, cache_implementation="static",
                       disable_compile=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="runs the kernels on CPU tensors, under Triton's interpreter")
def test_static_holo_prefill_on_the_kernels_decodes_on_the_pytorch_path(monkeypatch):
    """The Triton kernels serve a static cache's prefill; its state is then kept in the PyTorch path's layout,
    which the one-token (compiled) steps take even where the kernels are enabled."""
    from hf_attn.attention.holo import attention as holo

    monkeypatch.setattr(holo, "kernels_enabled", lambda x: True)  # CPU: the kernels run under Triton's interpreter
    calls = []
    kernel = holo._holo_kernel
    monkeypatch.setattr(holo, "_holo_kernel", lambda *a: calls.append(a[0].shape[2]) or kernel(*a))
    model = tiny_model("llama", "holo")
    cache = hf_attn.RecurrentCache(static=True)
    dft_matrices.cache_clear()
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():  # the prefill alone makes the steps' constants (one first made in a CUDA graph is lost)
        model(input_ids=ids(1, 5), **{CACHE_KWARG: hf_attn.RecurrentCache(static=True)}, use_cache=True)
    assert dft_matrices.cached(head_dim, "cpu")
    calls.clear()
    seqs, scores = _generate(model, cache, new=4)
    assert calls == [7, 7] and set(cache.layers[0].state) == {"memory", "count"}  # prefill only, both layers
    monkeypatch.setattr(holo, "kernels_enabled", lambda x: False)
    torch.testing.assert_close(scores, _full_forward(model, seqs, 4), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("window", [4, 16])
@pytest.mark.parametrize("variant", ["holo", "performer"])
def test_static_window_hybrid_matches_dynamic_cache_and_full_forward(variant, window):
    """A window hybrid (with 4 sinks; a 4-token window is full after the prompt, a 16-token one never fills) decodes
    through a static cache as through the dynamic one and a full forward, and its buffer keeps one shape."""
    model = tiny_model("llama", variant)
    hf_attn.set_window(model, window, mix=0.5)
    cache = hf_attn.RecurrentCache(static=True)
    seqs, static = _generate(model, cache)
    _, dynamic = _generate(model, hf_attn.RecurrentCache())
    torch.testing.assert_close(static, dynamic, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(static, _full_forward(model, seqs, 8), rtol=1e-4, atol=1e-4)
    layer = cache.layers[0]
    assert layer.state["window_k"].shape[2] == window
    where = {k: v.data_ptr() for k, v in layer.state.items()}
    with torch.no_grad():
        model(input_ids=seqs[:, -1:], **{CACHE_KWARG: cache}, use_cache=True)
    assert {k: v.data_ptr() for k, v in layer.state.items()} == where
