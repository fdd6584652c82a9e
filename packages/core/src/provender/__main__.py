"""``python -m provender``: the same as the ``provender`` command."""

from provender._cli import main

main()
