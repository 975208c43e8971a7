"""Data sources behind one factory, and the seeded defender/attacker/test splits."""

from .base import DataError, FaceDataset, Preprocess, to_tensor_batch
from .factory import SOURCES, load_source, preprocess_from_config
from .splits import ROLES, make_splits

__all__ = ["DataError", "FaceDataset", "Preprocess", "ROLES", "SOURCES", "load_source",
           "make_splits", "preprocess_from_config", "to_tensor_batch"]
