"""The relevance core: tokenizer, model weights, the batched NumPy engine (LRP, SA, GI) and the explainer.

Imports NumPy (and orjson for the vocabulary) only, never another layer of `shared`; no I/O besides loading
the model. `training` is the one module that imports TensorFlow, and nothing imports it at module level.
"""
