"""fMRI Representation Workbench: self-supervised and metric learning on fMRI."""

from workbench.errors import WorkbenchError

__version__ = "0.1.0"
__all__ = ["WorkbenchError", "__version__"]
