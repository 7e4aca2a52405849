"""dgc: Deep Goal-Oriented Clustering (Shi et al.), clustering guided by a response."""

__version__ = "0.1.0"

from dgc_cli.estimator import DGC  # noqa: E402

__all__ = ["DGC", "__version__"]
