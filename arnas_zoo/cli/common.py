"""What every command shares: one-line errors, the thread policy, progress, and model-aware defaults."""

from __future__ import annotations

import functools
import io
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from arnas_zoo.errors import ArnasZooError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE = 2
EXIT_CHECK_FAILED = 3  # `eval --strict`: the evaluation ran, a sanity check against false robustness failed
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:500]


def _crash_report(exc: BaseException) -> str:
    """Write the full traceback to a file; return its path (the terminal gets one line)."""
    fd, path = tempfile.mkstemp(prefix="arnas-zoo-error-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return path


class SuggestingGroup(click.Group):
    """A command group that answers a mistyped command with its close matches (``lst`` -> ``list``)."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0]) if args else ""
        if args and self.get_command(ctx, name) is None and not name.startswith("-"):
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            ctx.fail(f"no such command {name[:60]!r}{hint} (commands: {', '.join(self.list_commands(ctx))})")
        return super().resolve_command(ctx, args)


def finish_distributed(*_: Any, **__: Any) -> None:
    """Result callback of the command groups: a command that succeeded under torchrun ends its worker.

    See :func:`arnas_zoo.runs.distributed.finish_worker`. Without ``torch.distributed`` imported there is
    no process group, and the light commands (``list``, ``pretrained``) keep torch unimported.
    """
    if "torch.distributed" in sys.modules:
        from arnas_zoo.runs import distributed

        distributed.finish_worker()


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not raise a second broken pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no real file descriptor (tests)
        pass


def friendly_errors(func: F) -> F:
    """Every foreseeable failure becomes one line on stderr and a non-zero exit code, never a traceback.

    The package's typed errors and OS errors (missing or unreadable files) exit 2; an interrupted
    run (its state saved) exits 130; anything unexpected prints one line plus the file holding the
    full traceback, and exits 70.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except click.exceptions.ClickException:
            raise
        except (click.exceptions.Abort, click.exceptions.Exit):
            raise
        except KeyboardInterrupt as exc:  # RunInterrupted (state saved) or Ctrl-C outside a run
            message = _first_line(exc) if isinstance(exc, ArnasZooError) else "interrupted"
            click.echo(f"stopped: {message}", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:  # the reader went away (`arnas-zoo status RUN | head`): stop quietly, as cat does
            _silence_stdout()
            sys.exit(1)
        except (ArnasZooError, OSError) as exc:
            where = (
                f" ({exc.filename})"
                if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in str(exc)
                else ""
            )
            click.echo(f"error: {_first_line(exc)}{where}", err=True)
            sys.exit(EXIT_USAGE)
        except MemoryError:
            click.echo("error: out of memory; try a smaller --batch-size or --n", err=True)
            sys.exit(EXIT_USAGE)
        except Exception as exc:  # noqa: BLE001 -- the last resort: one line and where the traceback is
            if type(exc).__module__.startswith("arnas_zoo_runtime"):  # the deployment runtime's one-line errors
                click.echo(f"error: {_first_line(exc)}", err=True)
                sys.exit(EXIT_USAGE)
            path = _crash_report(exc)
            click.echo(f"internal error: {type(exc).__name__}: {_first_line(exc)} (traceback: {path})", err=True)
            sys.exit(EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


def progress_for(quiet: bool) -> Any:
    """The :class:`~arnas_zoo.progress.Progress` a command reports through (nothing with --quiet)."""
    from arnas_zoo.progress import Progress

    return Progress(enabled=not quiet)


quiet_option = click.option(
    "--quiet", "-q", "--no-progress", "quiet", is_flag=True, help="No progress output (errors and results still print)."
)


def key_values(pairs: tuple[str, ...], what: str) -> dict[str, Any]:
    """``("a=1", "b=x")`` -> ``{"a": "1", "b": "x"}``; a pair without ``=`` is a usage error."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair[:80]!r}", param_hint=what)
        out[key.strip()] = value.strip()
    return out


def model_defaults(model: Any) -> dict[str, Any]:
    """The dataset, eps and norm a loaded model was trained for, with where each came from.

    Read from the model's ``config.json`` (threat model and eps; ``extra.dataset``), its registry entry,
    and its ``metrics.json`` (the evaluation data or the training data).
    """
    found: dict[str, Any] = {}
    config = getattr(model, "config", None)
    if config is not None:
        if config.eps is not None:
            found["eps"] = (float(config.eps), "the model's config.json")
        if config.threat_model in ("linf", "l2"):
            found["norm"] = (config.threat_model, "the model's config.json")
        dataset = dict(config.extra or {}).get("dataset")
        if isinstance(dataset, str):
            found["dataset"] = (dataset, "the model's config.json")
    entry = getattr(model, "pretrained", None)
    if entry is not None and "dataset" not in found:
        found["dataset"] = (entry.dataset, "its registry entry")
    metrics = getattr(model, "metrics", None) or {}
    if "dataset" not in found and isinstance(metrics, dict):
        for block in (metrics.get("data"), (metrics.get("training") or {}).get("train_data")):
            if isinstance(block, dict) and isinstance(block.get("dataset"), str):
                found["dataset"] = (block["dataset"], "its metrics.json")
                break
    return found


def pick(given: Any, name: str, defaults: dict[str, Any], fallback: Any, notes: list[str]) -> Any:
    """An option's value: as given, else the model's, else ``fallback``; ``notes`` says which."""
    if given is not None:
        return given
    if name in defaults:
        value, where = defaults[name]
        notes.append(f"{name} {value} (from {where})")
        return value
    notes.append(f"{name} {fallback} (default; the model does not record one)")
    return fallback
