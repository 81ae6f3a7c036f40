"""Which path the attention functions take: PyTorch on CPU, the Triton kernels when enabled."""
from types import SimpleNamespace

import pytest
import torch

import hf_attn
from hf_attn import kernels
from hf_attn.attention.holo import attention as holo
from hf_attn.attention.performer import attention as performer

triton = pytest.importorskip("triton")


def test_cpu_tensors_take_the_pytorch_fallback(monkeypatch):
    assert not kernels.kernels_enabled(torch.zeros(1))
    monkeypatch.setenv("HF_ATTN_TRITON", "0")
    assert not kernels.kernels_enabled(torch.zeros(1, device="meta"))


def test_shapes_that_overflow_shared_memory_take_smaller_blocks_or_the_fallback(monkeypatch):
    """Rules from the H100 (sm_90, 227 KB shared memory per block): docs/kernels.md."""
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    assert kernels.kernels_enabled(torch.zeros(2, 64, dtype=torch.float32))
    assert not kernels.kernels_enabled(torch.zeros(2, 96, dtype=torch.float32))
    assert kernels.kernels_enabled(torch.zeros(2, 128, dtype=torch.bfloat16))
    assert not kernels.kernels_enabled(torch.zeros(2, 64, dtype=torch.float64))  # float64 references stay exact
    assert not kernels.kernels_enabled(torch.zeros(2, 256, dtype=torch.bfloat16))  # Gemma's head_dim: no kernel
    assert not kernels.kernels_enabled(torch.zeros(2, 8, dtype=torch.bfloat16))
    assert kernels.token_block(64, torch.bfloat16) == 64
    assert kernels.token_block(128, torch.bfloat16) == kernels.token_block(64, torch.float32) == 32


def test_performer_products_take_bf16_operands_only_for_bf16_inputs_of_head_dim_64_up(monkeypatch):
    """bf16 operands at head_dim 32 faulted on the H100; fp16's range would flush small features to zero."""
    from hf_attn.attention.performer.kernel import operand_type

    monkeypatch.setattr(triton.knobs.runtime, "interpret", False)
    assert operand_type(torch.bfloat16, 64) == operand_type(torch.bfloat16, 128) == "bf16"
    assert operand_type(torch.bfloat16, 32) == operand_type(torch.float16, 64) == operand_type(torch.float32, 64) == "fp32"
    monkeypatch.setattr(triton.knobs.runtime, "interpret", True)  # its bf16 dot is wrong: rounded operands instead
    assert operand_type(torch.bfloat16, 64) == "bf16_rounded"


@pytest.mark.parametrize("variant", ["holo", "performer"])
def test_enabled_kernels_are_called_and_agree(variant, monkeypatch):
    """With the switch forced on, the attention function runs the kernel (interpreted on CPU) and agrees."""
    if not torch.cuda.is_available() and not triton.knobs.runtime.interpret:
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    fn = hf_attn.get_variant(variant).function
    mod = SimpleNamespace(is_causal=True, layer_idx=0, training=False, config=SimpleNamespace(performer_num_features=64))
    q, k, v = (torch.randn(1, 2, 20, 32, device=dev) for _ in range(3))
    target = {"holo": holo, "performer": performer}[variant]
    monkeypatch.setattr(target, "kernels_enabled", lambda x: False)
    ref, _ = fn(mod, q, k, v, None)
    calls = []
    name = "holo_causal" if variant == "holo" else "performer_causal"
    kmod = __import__(f"hf_attn.attention.{variant}.kernel", fromlist=[name])
    real = getattr(kmod, name)
    monkeypatch.setattr(kmod, name, lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.setattr(target, "kernels_enabled", lambda x: True)
    out, _ = fn(mod, q, k, v, None)
    assert calls, "the kernel path was not taken"
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


class _OnSecondGpu:
    """Stands in for a tensor on cuda:1 (no GPU needed): what a layer of a model split over GPUs receives."""

    is_cuda = True
    device = torch.device("cuda", 1)


class _Switched(Exception):
    pass


@pytest.mark.parametrize("entry", ["holo", "performer", "gauge"])
def test_kernels_switch_to_their_inputs_device(entry, monkeypatch):
    """Triton launches on the current CUDA device; a model split over GPUs (`device_map`) calls later layers with
    tensors on another one, so each kernel entry point first switches to its inputs' device."""
    from hf_attn.attention.gauge.kernel import gauge_flash
    from hf_attn.attention.holo.kernel import holo_causal
    from hf_attn.attention.performer.kernel import performer_causal

    switched = []

    def device(d):
        switched.append(d)
        raise _Switched  # the entry point would run its kernels from here

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", device)
    fn = {"holo": holo_causal, "performer": performer_causal, "gauge": gauge_flash}[entry]
    with pytest.raises(_Switched):
        fn(_OnSecondGpu(), None, None, None, 1.0)
    assert switched == [torch.device("cuda", 1)]


def test_the_device_guard_leaves_calls_on_the_current_device_alone(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "device", lambda d: pytest.fail("switched devices"))
    x = _OnSecondGpu()
    assert kernels.device_guard(lambda a, b, key=None: (a, b, key))(x, 2, key=3) == (x, 2, 3)
    cpu = torch.zeros(1)
    assert kernels.device_guard(lambda a: a)(cpu) is cpu
