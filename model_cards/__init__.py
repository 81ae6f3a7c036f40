"""Model card templates (installed as `hf_attn.model_cards` package data; rendered by hf_attn.model_card)."""
