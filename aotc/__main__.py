"""`python -m aotc ...` is the `aotc` command."""
from .cli import main

main()
