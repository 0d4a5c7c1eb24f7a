"""salax: video saliency prediction in JAX/Flax, scored exactly by the AIM 2024 rules."""

__version__ = "0.1.0"
