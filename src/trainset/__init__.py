"""trainset: build, check and stream training sets for scientific imaging models."""

__version__ = "0.1.0"
