"""Diagnostics that work on any variant's attention maps, and the collector hook the training loop logs."""
from .collectors import DiagnosticsContext, collect, collectors, register_collector, summarize
from .entropy import attention_entropy, entanglement_entropy, head_entropies

__all__ = [
    "DiagnosticsContext",
    "attention_entropy",
    "collect",
    "collectors",
    "entanglement_entropy",
    "head_entropies",
    "register_collector",
    "summarize",
]
