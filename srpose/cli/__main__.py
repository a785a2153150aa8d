"""``python -m srpose.cli``: the ``srpose`` command."""
import sys

from srpose.cli import main

sys.exit(main())
