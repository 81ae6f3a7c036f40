"""The hf-attn version, in one place: the package metadata (pyproject.toml) and saved configs read it."""
__version__ = "0.1.0"
