"""`python -m gemma_np ...` runs the `gemma-np` command (see gemma_np/cli.py)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
