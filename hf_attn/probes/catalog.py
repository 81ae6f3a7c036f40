"""Which role each weight of a model plays (q/k/v/o, MLP gate/up/down, norm, position bias, embedding),
where it sits (encoder/decoder/model) and in which block, from parameter names of T5, Llama, Qwen2/3,
Mistral, BERT- and GPT-style models. The probes read weights through this catalog only."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

_ROLES = [  # (role, pattern on the module path), first match wins
    ("position_bias", r"relative_attention_bias"),
    ("norm", r"(norm|ln_\d|ln_f|layernorm)"),
    ("q", r"(q_proj|\.q|query)$"),
    ("k", r"(k_proj|\.k|key)$"),
    ("v", r"(v_proj|\.v|value)$"),
    ("o", r"(o_proj|\.o|out_proj|attention\.output\.dense)$"),
    ("gate", r"(gate_proj|wi_0|w1)$"),
    ("up", r"(up_proj|wi_1|\.wi|fc1|intermediate\.dense|c_fc|w3)$"),
    ("down", r"(down_proj|\.wo|fc2|output\.dense|c_proj|w2)$"),
]
_CROSS = re.compile(r"(EncDecAttention|cross_attn|encoder_attn|crossattention)")
_LAYER = re.compile(r"\.(?:layers|block|layer|h)\.(\d+)\.")


@dataclass
class WeightEntry:
    """One weight tensor of a model, classified by role, location (encoder/decoder/model) and layer."""

    name: str
    role: str  # q, k, v, o, gate, up, down, norm, position_bias, embedding, other
    location: str  # encoder, decoder or model
    layer: int  # -1 outside the blocks
    cross: bool  # cross-attention (T5 decoder)
    param: torch.Tensor

    @property
    def group(self) -> str:
        """`location/[cross_]role`: the unit the probes aggregate over (e.g. `decoder/cross_q`)."""
        return f"{self.location}/{'cross_' if self.cross else ''}{self.role}"


def catalog(model: torch.nn.Module) -> list[WeightEntry]:
    """One entry per parameter (tied weights once), classified by name."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    emb_weight = getattr(emb, "weight", None)
    out = []
    for name, p in model.named_parameters():
        path = name.rsplit(".", 1)[0]
        role = "embedding" if p is emb_weight else "other"
        if role == "other":
            for r, pattern in _ROLES:
                if re.search(pattern, path, flags=re.IGNORECASE):
                    role = r
                    break
        if role in ("q", "k", "v", "o", "gate", "up", "down") and (p.dim() != 2 or not name.endswith("weight")):
            role = "other"  # biases
        location = "encoder" if "encoder" in name else "decoder" if "decoder" in name else "model"
        m = _LAYER.search("." + name)
        out.append(WeightEntry(name, role, location, int(m.group(1)) if m else -1, bool(_CROSS.search(name)), p.detach()))
    return out


def by_group(entries: list[WeightEntry], roles: tuple[str, ...]) -> dict[str, list[WeightEntry]]:
    """Entries of the given roles, grouped by `group` and sorted by layer."""
    groups: dict[str, list[WeightEntry]] = {}
    for e in entries:
        if e.role in roles:
            groups.setdefault(e.group, []).append(e)
    return {g: sorted(v, key=lambda e: e.layer) for g, v in sorted(groups.items())}
