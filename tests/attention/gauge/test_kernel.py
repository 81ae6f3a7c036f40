"""gauge's fused Triton kernel against float64 (interpreter on CPU, compiled on CUDA), and the attention function's
routing to it: parameter-free and learned forms, padding masks, the masks it must leave to SDPA."""
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from kernel_cases import DEVICE, INTERPRETED, kernels_take, rel

import hf_attn
from hf_attn.attention.gauge import attention as gauge_mod
from hf_attn.attention.gauge import kernel as gk
from hf_attn.attention.gauge import settings_from_config
from gauge_cases import RandomBeliefs
from references import gauge_reference
from test_kernels import _visible

fn = hf_attn.get_variant("gauge").function


def formula(q, k, v, c, scale, causal, key_mask, extra):
    """`softmax(scale * (q.k + qe.ke + c))` v in float64 on the full grid; rows that see nothing give 0."""
    g = q.shape[1] // k.shape[1]
    q, k, v, c = q.double(), *(x.double().repeat_interleave(g, 1) for x in (k, v, c))
    s = q @ k.transpose(-1, -2) + c[:, :, None, :]
    if extra is not None:
        s = s + extra[0].double() @ extra[1].double().repeat_interleave(g, 1).transpose(-1, -2)
    tq, tk = s.shape[-2:]
    vis = _visible(q.shape[0], q.shape[1], tq, tk, causal, None if key_mask is None else key_mask.cpu()).to(s.device)
    w = torch.softmax((s * scale).masked_fill(~vis, float("-inf")), -1).nan_to_num(0.0)
    return (w @ v).transpose(1, 2)


CASES = [  # b, hq, hkv, tq, tk, d, extra, causal, pad, dtype
    (2, 4, 2, 70, 70, 64, 0, True, True, torch.float32),  # GQA, > one block, left padding
    (1, 2, 1, 3, 40, 32, 10, True, False, torch.float32),  # decoding shape, learned form's extra terms
    (2, 2, 2, 33, 50, 16, 9, False, True, torch.float32),  # encoder / cross-attention, padding
    (1, 4, 1, 130, 130, 64, 0, True, False, torch.bfloat16),
    (2, 2, 1, 70, 70, 96, 10, True, True, torch.bfloat16),  # head_dim padded to 128 inside the kernel
]
if not INTERPRETED:
    CASES += [(2, 16, 4, 1000, 1000, d, e, True, True, dt) for d in (64, 128) for e in (0, 10)
              for dt in (torch.float32, torch.bfloat16)]
    CASES = [c for c in CASES if kernels_take(c[5], c[9])]


@pytest.mark.parametrize("b,hq,hkv,tq,tk,d,e,causal,pad,dtype", CASES)
def test_kernel_matches_float64_with_every_gradient(b, hq, hkv, tq, tk, d, e, causal, pad, dtype):
    g = torch.Generator().manual_seed(tq + d)
    q, k, v = (torch.randn(bb, h, t, d, generator=g) for bb, h, t in ((b, hq, tq), (b, hkv, tk), (b, hkv, tk)))
    c = torch.randn(b, hkv, tk, generator=g) * 3
    extra = (torch.randn(b, hq, tq, e, generator=g), torch.rand(b, hkv, tk, e, generator=g) + 0.5) if e else ()
    ins = [x.to(DEVICE, dtype).requires_grad_() for x in (q, k, v)] + [
        x.to(DEVICE).requires_grad_() for x in (c, *extra)]
    mask = None
    if pad:
        mask = torch.ones(b, tk, dtype=torch.bool, device=DEVICE)
        mask[0, : tk // 3] = False
    out = gk.gauge_flash(*ins[:4], d**-0.5, causal, mask, tuple(ins[4:]) or None)
    ref_ins = [x.detach().double().requires_grad_() for x in ins]
    ref = formula(*ref_ins[:4], d**-0.5, causal, mask, tuple(ref_ins[4:]) or None)
    grad = torch.randn(ref.shape, generator=g).to(DEVICE)
    got = torch.autograd.grad(out, ins, grad.to(out.dtype))
    want = torch.autograd.grad(ref, ref_ins, grad.double())
    tol = 2e-5 if dtype == torch.float32 else 3e-2
    assert out.dtype == dtype and out.shape == (b, tq, hq, d)
    assert rel(out, ref) < tol, f"output off by {rel(out, ref):.2e}"
    for name, a, r in zip(["q", "k", "v", "c", "qe", "ke"], got, want):
        assert torch.isfinite(a).all() and rel(a, r) < tol, f"d{name} off by {rel(a, r):.2e}"
    if pad:
        assert (got[1][0, :, : tk // 3] == 0).all() and (got[3][0, :, : tk // 3] == 0).all()  # padded keys
        if causal and tq == tk:
            assert (out[0, : tk // 3] == 0).all()  # rows that see no key


@pytest.mark.parametrize("dtype,causal,pad", [(torch.float32, True, True), (torch.bfloat16, False, False)])
def test_key_constant_formed_in_the_kernels_matches_float64(dtype, causal, pad):
    """`c=None`: the parameter-free constant `-|k|^2/2`, its gradient folded into dk inside the kernels."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, h, 45, 32, generator=g) for h in (4, 2, 2))
    ins = [x.to(DEVICE, dtype).requires_grad_() for x in (q, k, v)]
    mask = torch.ones(2, 45, dtype=torch.bool, device=DEVICE)
    mask[1, :7] = False
    mask = mask if pad else None
    out = gk.gauge_flash(*ins, None, 0.125, causal, mask)
    ref_ins = [x.detach().double().requires_grad_() for x in ins]
    ref = formula(*ref_ins, -0.5 * ref_ins[1].square().sum(-1), 0.125, causal, mask, None)
    grad = torch.randn(ref.shape, generator=g).to(DEVICE)
    tol = 2e-5 if dtype == torch.float32 else 3e-2
    assert rel(out, ref) < tol
    got, want = torch.autograd.grad(out, ins, grad.to(dtype)), torch.autograd.grad(ref, ref_ins, grad.double())
    for name, a, r in zip("qkv", got, want):
        assert rel(a, r) < tol, f"d{name} off by {rel(a, r):.2e}"


def test_kernel_refuses_shapes_it_was_not_built_for():
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(ValueError, match="extra 17"):
        gk.gauge_flash(q, q, q, torch.zeros(1, 1, 4), 1.0, extra=(torch.zeros(1, 1, 4, 17),) * 2)


def _module(causal=True, **cfg):
    return SimpleNamespace(is_causal=causal, layer_idx=0, training=False, config=SimpleNamespace(**cfg))


@pytest.fixture
def fused(monkeypatch):
    """The attention function with the kernel path on for CPU tensors (interpreted); records each kernel call's
    positional arguments `(q, k, v, c, scale, causal, key_mask, extra)`."""
    calls = []
    real = gk.gauge_flash
    monkeypatch.setattr(gauge_mod, "kernels_enabled", lambda x: True)
    monkeypatch.setattr(gk, "gauge_flash", lambda *a, **kw: calls.append(a + (None,) * (8 - len(a))) or real(*a, **kw))
    return calls


@pytest.mark.parametrize("learned", [False, True])
def test_attention_function_routes_both_forms_through_the_kernel(fused, learned):
    b, hq, hkv, t, d = 2, 4, 2, 24, 16
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(b, h, t, d, generator=g) for h in (hq, hkv, hkv))
    padding = torch.ones(b, t, dtype=torch.bool)
    padding[0, :5] = False
    module = _module(gauge_variance=[0.5, 2.0, 1.0, 1.5, 0.7, 1.0, 1.2, 0.9, 1.1, 0.8][: 5])
    module.config.gauge_irrep_spec = "2x0+1x1+1x2"
    settings = settings_from_config(module.config, d, d**-0.5)
    kw = {"gauge_beliefs": RandomBeliefs(settings, per_block=True)} if learned else {}
    out, _ = fn(module, *(x.to(DEVICE) for x in (q, k, v, padding)), scaling=d**-0.5, **kw)
    out = out.cpu()
    assert len(fused) == 1 and fused[0][5] is True and torch.equal(fused[0][6].cpu(), padding)
    assert (fused[0][7] is not None) == learned  # per-token variances travel as the extra terms
    vis = _visible(b, hq, t, t, True, padding)
    extra = {}
    if learned:
        qb, kb = kw["gauge_beliefs"].made["q"], kw["gauge_beliefs"].made["k"]
        extra = dict(phi_q=qb.phi.cpu(), phi_k=kb.phi.cpu(), var_q=qb.var_per_dim(settings.layout).cpu(),
                     var_k=kb.var_per_dim(settings.layout).cpu())
    ref = gauge_reference(module, q, k, v, vis, None, d**-0.5, **extra)
    live = vis.any(-1).transpose(1, 2)
    assert rel(out[live], ref[live]) < 1e-5


def test_masks_beyond_causal_and_padding_stay_on_sdpa(fused):
    q, k, v = (torch.randn(2, 2, 12, 16, device=DEVICE) for _ in range(3))
    mask = torch.ones(2, 1, 12, 12, dtype=torch.bool, device=DEVICE).tril()
    mask[1, :, :, :3] = False  # causal + left padding: the kernel takes it, padding read off the mask
    out, _ = fn(_module(), q, k, v, mask)
    assert len(fused) == 1 and fused[0][6].tolist() == [[True] * 12, [False] * 3 + [True] * 9]
    mask.__dict__[gauge_mod.MASK_MEMO][True] = (False, None)  # read once per mask: the next layer trusts the memo
    fn(_module(), q, k, v, mask)
    assert len(fused) == 1
    del mask.__dict__[gauge_mod.MASK_MEMO]
    window = mask & torch.ones(12, 12, dtype=torch.bool, device=DEVICE).triu(-3)  # more than padding
    slow, _ = fn(_module(), q, k, v, window, output_attentions=True)
    fast, _ = fn(_module(), q, k, v, window)
    fn(_module(), q, k, v, None, position_bias=torch.randn(1, 2, 12, 12, device=DEVICE))
    with pytest.MonkeyPatch.context() as patch:  # torch.compile traces the SDPA path whole
        patch.setattr(torch.compiler, "is_compiling", lambda: True)
        fn(_module(), q, k, v, None)
    assert len(fused) == 1
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, fn(_module(), q, k, v, mask, output_attentions=True)[0], rtol=1e-5, atol=1e-6)


def left_padded_llama(length: int, pad: int):
    """A tiny gauge Llama, token ids `(2, length)` and an attention mask whose second row has `pad` left pads."""
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation="gauge")
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval().to(DEVICE)
    attention = torch.ones(2, length, dtype=torch.long, device=DEVICE)
    attention[1, :pad] = 0
    return model, torch.randint(1, 64, (2, length), device=DEVICE), attention


def test_llama_with_left_padding_gives_the_sdpa_paths_logits(fused):
    """A whole model: the masks transformers builds for gauge reach the kernel, logits as on the SDPA path."""
    model, ids, attention = left_padded_llama(20, 6)
    with torch.no_grad():
        got = model(ids, attention_mask=attention).logits
    assert len(fused) == 2
    gauge_mod.kernels_enabled = lambda x: False  # monkeypatch restores it
    with torch.no_grad():
        want = model(ids, attention_mask=attention).logits
    live = attention.bool()
    assert rel(got[live], want[live]) < 1e-5


def test_cached_generation_through_the_kernel_matches_the_sdpa_path(fused):
    """Greedy decoding of a left-padded batch with the KV cache: one-token causal steps with an offset and the
    padding masks transformers builds for them reach the kernel, and the tokens are the SDPA path's."""
    model, ids, attention = left_padded_llama(12, 4)
    kw = dict(attention_mask=attention, max_new_tokens=6, do_sample=False, pad_token_id=0, output_scores=True,
              return_dict_in_generate=True)
    got = model.generate(ids, **kw)
    assert len(fused) == 2 * 6 and all(call[0].shape[2] == 1 for call in fused[2:])  # prefill, then 1-token steps
    gauge_mod.kernels_enabled = lambda x: False  # monkeypatch restores it
    want = model.generate(ids, **kw)
    assert torch.equal(got.sequences, want.sequences)
    assert rel(torch.stack(got.scores), torch.stack(want.scores)) < 1e-5


def test_parameter_free_calls_run_no_torch_arithmetic_around_the_kernels(fused, monkeypatch):
    """Every torch op costs the host a dispatch (on small inputs, more than the kernels): around the launches the
    parameter-free form only allocates, forward and backward."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    class Stub:  # no launch: only the torch ops around them run
        def __getitem__(self, grid):
            return lambda *args, **kwargs: None

    monkeypatch.setattr(gk, "_launch", lambda *args, **kwargs: None)
    monkeypatch.setattr(gk, "_key_constant", Stub())
    monkeypatch.setattr(gk, "_delta", Stub())
    q, k, v = (torch.randn(1, 4, 64, 64, device=DEVICE, requires_grad=True) for _ in range(3))
    out, _ = fn(_module(), q, k, v, None)
    grad = torch.ones_like(out)
    with Ops() as ops:
        out, _ = fn(_module(), q, k, v, None)
        out.backward(grad)
    assert len(fused) == 2 and fused[1][3] is None  # the key constant is formed inside the kernels
    assert set(ops.seen) <= {"aten.empty.memory_format", "aten.empty_like.default", "aten.detach.default"}, ops.seen
