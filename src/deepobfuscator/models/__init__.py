"""Networks: VGG16-BN blocks split into the device obfuscator and the cloud classifier."""

from .split import (
    Classifier,
    Models,
    Obfuscator,
    Reconstructor,
    build_models,
    feature_shape,
    init_adversaries_from_classifier,
    reinit_attackers,
)

__all__ = ["Classifier", "Models", "Obfuscator", "Reconstructor", "build_models",
           "feature_shape", "init_adversaries_from_classifier", "reinit_attackers"]
