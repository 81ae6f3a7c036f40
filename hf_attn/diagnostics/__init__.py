"""Diagnostics that work on any variant's attention maps."""
from . import gauge
from .entropy import attention_entropy, entanglement_entropy, head_entropies

__all__ = ["gauge", "attention_entropy", "entanglement_entropy", "head_entropies"]
