"""``python -m workbench.cli``: the ``workbench`` command (also under ``torchrun``)."""

import sys

from workbench.cli import main

sys.exit(main())
