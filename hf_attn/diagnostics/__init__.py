"""Diagnostics that work on any variant's attention maps."""
from .entropy import attention_entropy, entanglement_entropy, head_entropies

__all__ = ["attention_entropy", "entanglement_entropy", "head_entropies"]
