"""``python -m export`` in a checkout (installed: ``arnas-zoo export``)."""

from .cli import main

if __name__ == "__main__":
    main()
