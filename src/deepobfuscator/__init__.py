"""DeepObfuscator: privacy-preserving split inference on images."""

__version__ = "0.1.0"
