"""`python -m autograder <command>`: see `python -m autograder --help`."""

from .cli import main

raise SystemExit(main())
