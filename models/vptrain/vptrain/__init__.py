"""vptrain: generate, jointly train, export, evaluate and ship variant-parallel MobileNetV2 families."""

__version__ = "0.1.0"
