"""`python -m weightspace ...` (and `torchrun ... -m weightspace train ...`): the CLI."""

from weightspace.cli import main

main()
