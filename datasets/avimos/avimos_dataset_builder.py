"""TFDS-style entry point for AViMoS: the builder lives in the installed package (salax.data.avimos_builder)."""

from salax.data.avimos_builder import Avimos as Builder

__all__ = ["Builder"]
