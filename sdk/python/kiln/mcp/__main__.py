"""``python3 -m kiln.mcp``: the same as the ``kiln-mcp`` command."""
import sys

from . import main

sys.exit(main())
