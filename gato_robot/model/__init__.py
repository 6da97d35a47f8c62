"""The Gato model (torch): config and presets, embedding, transformer, KV cache, sampling, policy, checkpoints.

One concept per module: ``config`` (GatoConfig, PRESETS), ``embedding``, ``gato`` (the transformer),
``kv_cache``, ``sampling``, ``policy`` (TorchPolicy), ``checkpoint``. See docs/model.md for the design.
"""
