"""``python -m normdrop``: the same as the ``normdrop`` command."""

import sys

from normdrop.cli import main

sys.exit(main())
