"""Converting a pretrained softmax model to holo or performer: the learnable parts, as a wrapper.

`hf_attn.wrap(model, hf_attn.LinearizeConfig(variant="performer"))` (or `variant="holo"`) switches the model
to the variant and adds, at `module.hf_attn_parts` of every attention module, a `LinearizeParts` whose tensors
the attention function reads (interface: `hf_attn/attention/common.py`):

- performer: `features` `(Hkv, m, D)`, the FAVOR+ projection per key/value head made a Parameter (a learnable
  feature map in the spirit of Hedgehog, Zhang et al. ICLR 2024), initialised to the layer's random features,
  so at init the wrapped model is the parameter-free performer. The positive form
  `exp(W x' - |x'|^2/2 - stab)` stays; the key stabiliser is recomputed from the detached learned W.
- holo: `q_map` `(Hq, D, Db)`, `k_map` `(Hkv, D, Db)`, per-head linear maps of q and k into the binding space,
  initialised to the identity (at init: the parameter-free holo when `binding_dim` is head_dim). With a wider
  `binding_dim` Db, values are zero-padded to Db and outputs truncated back to head_dim.
- with `config.hf_attn_window > 0` (a LoLCATs window hybrid, `hf_attn/attention/window.py`): `window_mix_logit`
  `(Hq,)`, the variant's share per head, `sigmoid(logit)`, starting at `config.hf_attn_window_mix` (0.1).

How a conversion pipeline drives it (docs/conversion.md):

(a) window: `hf_attn.set_window(model, 64)` (sets `config.hf_attn_window`, also on T5-style config copies; it
    is saved with the model config). Set it before wrapping, so the wrapper adds the learned shares.
(b) train the variant's parts: `model = hf_attn.wrap(model, hf_attn.LinearizeConfig(variant="performer"))`;
    the base model is frozen (`freeze_base=True`).
(c) trainable tensors: `hf_attn.adapters.wrapper_parameters(model)` (name -> Parameter: the `hf_attn_parts`
    tensors); `save_wrapper` / `load_wrapper` / `unwrap` as for every wrapper.
(d) window-only ablation: `hf_attn.set_window_mix(model, 0.0)`, on a wrapped model or a plain one with a window:
    exact sliding-window softmax, the variant's share 0 on every head.
"""
from .config import LinearizeConfig
from .layer import LinearizeParts
from .wrap import apply, build_parts, set_window_mix

__all__ = ["LinearizeConfig", "LinearizeParts", "apply", "build_parts", "set_window_mix"]
