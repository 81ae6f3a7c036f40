"""holo: holographic reduced representations as attention (math, PyTorch path, Triton kernels, dispatch).

`math.py` is the HRR reference math, `attention.py` the attention function transformers calls (it picks the
Triton path in `kernel.py` on CUDA), `SPEC` what the registry shows for it.
"""
from ..window import CONFIG_KEYS as WINDOW_KEYS
from .attention import holo_attention_forward

SPEC = dict(
    name="holo",
    function=holo_attention_forward,
    summary="holographic reduced representations: keys bound to values by circular convolution, retrieval by "
    "correlation (Plate; Hrrformer)",
    complexity="O(T·D²) time (the real DFT runs as a D x (D+2) matmul; an FFT would make it O(T·D·log D)), "
    "O(T·D) memory (T5 position_bias / 4D masks: materialised O(T²·D))",
    config_keys={"holo_unitary": "project query/key spectra to unit magnitude (default True)",
                 "holo_soft": "floor of that projection, a fraction of the RMS bin magnitude (default 0.1; larger: "
                              "smaller bf16 error, blurrier unbinding)", **WINDOW_KEYS},
    recurrent=True,
)

__all__ = ["SPEC", "holo_attention_forward"]
