"""fMRI Representation Workbench: self-supervised and metric learning on fMRI."""

from workbench.errors import WorkbenchError

__version__ = "0.1.0"
__all__ = ["WorkbenchError", "__version__", "load_encoder"]


def __getattr__(name: str):
    """``workbench.load_encoder`` imports torch only when it is first used."""
    if name == "load_encoder":
        from workbench.export import load_encoder

        return load_encoder
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
