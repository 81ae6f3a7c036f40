"""performer Triton kernels against the PyTorch path (interpreter on CPU, compiled on CUDA)."""
import pytest
import torch

from kernel_cases import INTERPRETED, assert_agrees, inputs, kernels_take, module
from references import performer_reference

from hf_attn.attention.performer.attention import performer_attention_forward, random_features
from hf_attn.attention.performer import kernel as kt
from hf_attn.kernels import HEAD_DIMS

CASES = [  # b, hq, hkv, t, d, m, dtype, pad
    (2, 4, 2, 70, 64, 96, torch.float32, True),  # GQA, two chunks, a partial feature block, left padding
    (1, 2, 2, 40, 96, 64, torch.float32, False),
    (1, 2, 1, 50, 32, 64, torch.bfloat16, False),
    (1, 2, 1, 70, 128, 64, torch.bfloat16, True),  # 16-bit, head_dim 128: LAUNCH's 64-token chunks, two of them
]
if not INTERPRETED:
    CASES += [(2, 16, 4, 1000, d, 256, dt, True)
              for d in HEAD_DIMS for dt in (torch.float32, torch.bfloat16, torch.float16)]
    CASES = [c for c in CASES if kernels_take(c[4], c[6])]


@pytest.mark.parametrize("b,hq,hkv,t,d,m,dtype,pad", CASES)
def test_performer_kernel_matches_torch(b, hq, hkv, t, d, m, dtype, pad):
    q, k, v, mask = inputs(b, hq, hkv, t, d, dtype, pad)
    mod = module(performer_num_features=m)
    w = random_features(d, m, 1009, q.device)  # layer_idx 1, seed 0: what the attention function draws
    assert_agrees(
        lambda q, k, v: kt.performer_causal(q, k, v, w, d**-0.25, mask)[0],
        lambda q, k, v: performer_attention_forward(mod, q, k, v, mask)[0],
        q, k, v, dtype,
    )


@pytest.mark.parametrize("d,dtype", [(32, torch.float32), (64, torch.bfloat16)])
def test_performer_state_carries_across_calls(d, dtype):
    """Prefill in two calls = one call; bf16 at head_dim 64 takes the bf16 operands and chunk states, with a
    carried fp32 state of the kernels' tile shape (the decoding path) entering the scan."""
    q, k, v, _ = inputs(1, 2, 1, 80, d, dtype, False)
    w = random_features(d, 64, 0, q.device)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    whole, (s, z) = kt.performer_causal(q, k, v, w, d**-0.25)
    first, state = kt.performer_causal(q[:, :, :30], k[:, :, :30], v[:, :, :30], w, d**-0.25)
    second, (s2, z2) = kt.performer_causal(q[:, :, 30:], k[:, :, 30:], v[:, :, 30:], w, d**-0.25, init=state)
    assert s2.dtype == z2.dtype == torch.float32
    torch.testing.assert_close(torch.cat([first, second], 1), whole, **tol)
    torch.testing.assert_close((s2, z2), (s, z), **(tol if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-4)))


def test_gradient_reaches_the_carried_state():
    """Central differences of the loss along a random step of the carried `(S, z)` match its gradient."""
    q, k, v, _ = inputs(1, 2, 1, 40, 32, torch.float32, False)
    q, k, v = (x.detach()[:, :, 20:] for x in (q, k, v))
    w = random_features(32, 64, 0, q.device)
    _, (s0, z0) = kt.performer_causal(q, k, v, w, 32**-0.25)  # a state of the shape and scale decoding carries
    s0, z0 = s0.requires_grad_(), z0.requires_grad_()
    g = torch.randn(1, 20, 2, 32, device=q.device)

    def loss(s, z):
        return (kt.performer_causal(q, k, v, w, 32**-0.25, init=(s, z))[0] * g).sum()

    loss(s0, z0).backward()
    ds, dz = torch.randn_like(s0) * 1e-2 * s0.abs().mean(), torch.randn_like(z0) * 1e-2 * z0.abs().mean()
    with torch.no_grad():
        change = (loss(s0 + ds, z0 + dz) - loss(s0 - ds, z0 - dz)) / 2
    torch.testing.assert_close(change, (s0.grad * ds).sum() + (z0.grad * dz).sum(), rtol=1e-2, atol=1e-5)


def test_large_norm_queries_keep_finite_gradients():
    """SmolLM2's queries have |q|^2/2 ~ 60 after scaling: a stabiliser without the norm term gave denominators
    of 1e-43 and inf/NaN gradients (seen in a GPU recovery fine-tune). Kernel and PyTorch path vs float64."""
    q, k, v, _ = inputs(1, 4, 2, 70, 64, torch.float32, False)
    with torch.no_grad():
        q.mul_(4.0)  # |q| ~ 32 before the head_dim^-1/4 scaling, as in SmolLM2's layers
    mod = module(performer_num_features=64)
    w = random_features(64, 64, 1009, q.device)
    ref = lambda q, k, v: performer_attention_forward(mod, q.double(), k.double(), v.double(), None)[0]  # noqa: E731
    for fast in (lambda q, k, v: kt.performer_causal(q, k, v, w, 64**-0.25, None)[0],
                 lambda q, k, v: performer_attention_forward(mod, q, k, v, None)[0]):
        assert_agrees(fast, ref, q, k, v, torch.float32)


def test_large_norm_keys_keep_finite_gradients(monkeypatch):
    """Keys of large norm (attention sinks) had features ~1e-40: a query seeing only them got a subnormal
    denominator and inf/NaN gradients (a SmolLM2 attention transfer turned NaN at step 18). Their log-features
    are floored at KEY_FLOOR below the stabiliser: the PyTorch path's outputs and gradients match the float64
    reference (the kernel's, next test, are ill-conditioned for the first queries)."""
    monkeypatch.setenv("HF_ATTN_TRITON", "0")
    q, k, v, _ = inputs(1, 4, 2, 70, 32, torch.float32, False)
    with torch.no_grad():
        k[:, :, :3].mul_(7.0)  # the first keys' largest log-feature ~75 below the stabiliser
    mod = module(performer_num_features=64)
    visible = torch.ones(70, 70, dtype=torch.bool, device=q.device).tril().expand(1, 4, 70, 70)
    ref = lambda q, k, v: performer_reference(mod, q, k, v, visible, None, None)  # noqa: E731
    assert_agrees(lambda q, k, v: performer_attention_forward(mod, q, k, v, None)[0], ref, q, k, v, torch.float32)


def test_kernel_floors_key_features_as_the_pytorch_path():
    """The same large-norm first keys through the kernel: its outputs are the PyTorch path's and its gradients
    finite. (Those of the first queries, which see only floored keys, are ill-conditioned: d out / d den ~ 1/den,
    large terms that cancel, which the kernel's tf32 products do not resolve as fp32 autograd does.)"""
    q, k, v, _ = inputs(1, 4, 2, 70, 32, torch.float32, False)
    with torch.no_grad():
        k[:, :, :3].mul_(7.0)
    mod = module(performer_num_features=64)
    w = random_features(32, 64, 1009, q.device)
    out = kt.performer_causal(q, k, v, w, 32**-0.25, None)[0]
    torch.testing.assert_close(out, performer_attention_forward(mod, q, k, v, None)[0], rtol=1e-4, atol=1e-5)
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(out.square().sum(), (q, k, v)))
