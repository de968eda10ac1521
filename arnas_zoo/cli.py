"""The ``arnas-zoo`` command line: thin click commands over library functions.

Every command has ``--help``; expected failures (bad input, unknown names, missing files) print one
line on stderr and exit with a non-zero code instead of a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from arnas_zoo.errors import ArnasZooError

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Turn the package's typed errors (and missing files) into a one-line message and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ArnasZooError, FileNotFoundError, PermissionError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            click.echo(f"error: {message}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="arnas-zoo")
def main() -> None:
    """arnas-zoo: adversarially robust architectures found by NAS (ARNAS and peers)."""


if __name__ == "__main__":  # pragma: no cover
    main()
