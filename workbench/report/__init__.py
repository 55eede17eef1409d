"""The reproducible report: the notebooks executed headlessly with papermill.

==================  ==============================================================
``runner``          :func:`run_report`: execute the notebooks, write the manifest
``profiles``        the parameter sets ``quick``, ``full`` and ``tiny``
``params``          notebook parameters: declared types, checks, the plan per notebook
``html``            notebook HTML pages and the ``index.html`` of a report
==================  ==============================================================
"""

from workbench.report.runner import PROFILES, Profile, ReportError, run_report

__all__ = ["PROFILES", "Profile", "ReportError", "run_report"]
