"""Bias mitigators (``lmforge.bias_mitigators``) and the bias probe (a Lightning callback).

Mitigators: `CounterfactualAugmentation`, `BalancedSampling`, `BlocklistFilter`
and `AdversarialDebiasing`, one per module. `BiasProbe` (``probe.py``) measures
CrowS-Pairs scores during training; ``lmforge bias-eval`` (``cli.py``) scores a
saved model.
"""
