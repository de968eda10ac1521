"""``python -m search``: run, resume and sweep ARNAS searches (see docs/search.md)."""

from .cli import main

if __name__ == "__main__":
    main()
