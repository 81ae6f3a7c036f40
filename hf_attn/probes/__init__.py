"""Weight-geometry probes of note 003 (sections 1-6) for any loaded model; `hf-attn probe MODEL`."""
from .catalog import WeightEntry, catalog
from .embedding import embedding_probe
from .runner import ProbeOptions, run_probes

__all__ = ["ProbeOptions", "WeightEntry", "catalog", "embedding_probe", "run_probes"]
