"""The causal-disentanglement model, its losses, training and quality heads (torch).

Submodules import torch; ``cdiqa.model.distortions`` is numpy-only. Import what you need from
the submodule, e.g. ``from cdiqa.model.network import CDIQA``.
"""
