"""``python -m search.cli``, as before the command line became a package."""

from search.cli import main

main()
