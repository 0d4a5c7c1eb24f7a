"""Evaluation by the AIM 2024 rules: one video (`videos`), a model on a built split (`split`), a
folder of submitted videos (`submission`), and the CLI (`python -m salax.evaluate`).

Submodules are imported where used, so the submission scorer does not load the model or TFDS.
"""
