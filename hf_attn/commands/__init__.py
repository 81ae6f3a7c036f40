"""Small `hf-attn` subcommands (one module each); bigger jobs keep their command next to their code."""
