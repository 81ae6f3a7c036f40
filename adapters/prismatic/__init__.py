"""Prismatic (v2 and v3): soft-merged expert views of pretrained modules, with routing metrics."""
from ..base import WrapperSpec, register_wrapper
from .config import PrismaticConfig
from .wrap import apply, force_expert, prismatic_layers, routing_metrics

register_wrapper(WrapperSpec("prismatic", PrismaticConfig, apply))

__all__ = ["PrismaticConfig", "force_expert", "prismatic_layers", "routing_metrics"]
