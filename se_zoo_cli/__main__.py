"""``python -m se_zoo_cli``: the ``se-zoo`` command (e.g. under ``torchrun --nproc-per-node N -m se_zoo_cli``)."""
import sys

from . import main

sys.exit(main())
