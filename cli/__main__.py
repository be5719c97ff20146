"""`python -m cli`: the orchestra command without the console script."""

from cli import main

main()
