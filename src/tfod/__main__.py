"""`python -m tfod` is the `tfod` command."""

from tfod.cli import main

main()
