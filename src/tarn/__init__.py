"""tarn: a reproducible MLOps pipeline from a data lake to a deployed, retrained model."""

__version__ = "0.1.0"
