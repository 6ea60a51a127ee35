"""``python -m sipwake``: the command line."""

from sipwake.cli import main

main()
