"""The saliency model: UMT video encoder (umt.py), multi-scale decoder (decoder.py), audio branch
(audio.py), assembled in saliency.py (``model_config``, ``build_model``, ``SaliencyModel``).

Logical axis names (``axes.LOGICAL_AXES``) on every parameter and on the main activations; the
training code maps each to mesh axes with ``nnx.logical_axis_rules`` (all must be mapped, ``None``
to replicate):

- ``batch``: clips; ``time``: frames or tubelets (and audio frames); ``length``: encoder tokens;
- ``embed``: encoder width; ``mlp``: encoder MLP width; ``heads``: attention heads; ``kv``: head width;
- ``height``, ``width``: feature-map rows and columns; ``channels``: decoder and audio channels;
  ``mel``: mel bins.

Parameters: patch kernel (None x 4, embed); qkv (embed, None, heads, kv); q/v biases (heads, kv);
attention output (heads, kv, embed); fc1 (embed, mlp); fc2 (mlp, embed); norms (embed);
learned pos_embed (length, embed); decoder/audio dense and conv kernels (..., channels). Scanned
encoder blocks add a leading unnamed (replicated) layer axis.
"""
