"""tsm-deploy: a deployment compiler for Temporal Shift Module video models."""

__version__ = "0.1.0"
