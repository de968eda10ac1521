"""``python -m arnas_zoo.cli`` runs the ``arnas-zoo`` command line."""

from arnas_zoo.cli import main

if __name__ == "__main__":
    main()
