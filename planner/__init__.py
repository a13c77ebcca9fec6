"""Pure estimation: model specs, memory model, time model, fit search, probes.

Nothing here imports torch, transformers or trl at import time (the project's import rule): `advisor plan`
must answer in a fraction of a second. Functions that need them import them inside.
"""
