"""``python -m epics_bridge --config FILE``."""

import sys

from .cli import main

sys.exit(main())
