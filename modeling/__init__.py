"""Custom configs and Auto registration (imported as `hf_attn.modeling`): checkpoints that carry a variant
and/or a wrapper reload with a plain `from_pretrained(path_or_repo_id)` after `import hf_attn`."""
from .checkpoint import base_state_dict, checkpoint_fields, save_pretrained
from .push import push_to_hub
from .families import DEFAULT_FAMILIES, Family, family_of, list_families, register_family

__all__ = [
    "DEFAULT_FAMILIES",
    "Family",
    "base_state_dict",
    "checkpoint_fields",
    "family_of",
    "list_families",
    "push_to_hub",
    "register_family",
    "save_pretrained",
]
