"""``python -m responder`` is the ``certstatus`` command."""

import sys

from .cli import main

sys.exit(main())
