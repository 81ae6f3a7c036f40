"""Weight-geometry probes (docs/probes.md) for any loaded model; `hf-attn probe MODEL`."""
from .catalog import WeightEntry, catalog
from .embedding import embedding_probe
from .runner import ProbeOptions, run_probes

__all__ = ["ProbeOptions", "WeightEntry", "catalog", "embedding_probe", "run_probes"]
