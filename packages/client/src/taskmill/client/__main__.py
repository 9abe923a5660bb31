"""``python -m taskmill.client`` and the ``taskmill`` command."""

import sys

from taskmill.client._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
