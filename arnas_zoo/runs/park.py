"""Park a folder of long runs where it outlives the machine, and bring it back verified.

The zoo's 20-cell CPU runs take days of sessions, and a session's machine may not come back: its disk
goes with it. :func:`park` snapshots a folder of runs (ROOT: one sub-folder per run, the pool's markers,
evaluation reports and AutoAttack shard results) to a destination that survives the machine, a folder
(a mounted volume) or a private Hub repo (``hf://org/name``; :mod:`arnas_zoo.runs.park_hub`).
:func:`unpark` brings the latest snapshot back into ROOT.

What a snapshot holds: every regular file under ROOT except lock and claim files (``.lock``,
``*.lock``, ``*.claim``), temporary files (``*.tmp``, ``.*.link-*``) and the kept previous states
(``*.prev.safetensors``): a run resumes from its latest state, which is verified here. Files are first
copied to a staging folder: every writer here replaces files by atomic rename, so each copy reads one
whole version even while runs go on writing. Each resume state in the copy is then verified (its
digest); one that fails is copied again, and after three tries the park fails and names it.
``PARKED.json`` lists every file with its size and SHA-256, and every run's position (epoch, step).

:func:`unpark` checks every file against ``PARKED.json`` (sizes, digests, no file beyond the list) and
every state's digest before it writes anything into ROOT. Then it adds the files ROOT lacks and skips
the identical ones; a file that differs is a conflict, refused unless ``force``, which first moves
ROOT's version aside into ``ROOT/.replaced-<UTC time>/``. Nothing is deleted.

A folder destination keeps each snapshot as ``DEST/parks/<UTC time>/`` and names the latest in
``DEST/LATEST``, written last (atomically), so a park cut short leaves the previous one in place; the
``keep`` newest snapshots are kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from arnas_zoo.atomic import atomic_write_json, atomic_write_text
from arnas_zoo.checkpoint import sha256_file
from arnas_zoo.errors import CheckpointError, ConfigError, RunFolderBusyError, UntrustedFileError
from arnas_zoo.runs.park_manifest import MANIFEST, SCHEMA, NothingParkedError, read_manifest, skipped

__all__ = ["MANIFEST", "NothingParkedError", "Parked", "Unparked", "park", "snapshot", "unpark", "verify_snapshot"]

PARK_LOCK = ".park.lock"
HUB_PREFIX = "hf://"
COPY_TRIES = 3


@dataclass
class Parked:
    """One park: where it went, what it holds (files, bytes) and where each run stood."""

    dest: str
    files: int
    bytes: int
    runs: dict[str, dict[str, Any]]
    at: str
    revision: str | None = None  # the Hub commit, or the folder snapshot's name

    def format(self) -> str:
        where = f"{self.dest} ({self.revision})" if self.revision else self.dest
        lines = [f"parked {self.files} files ({self.bytes / 2**20:.1f} MiB) to {where} at {self.at}"]
        lines += [f"  {name}: {_position(run)}" for name, run in sorted(self.runs.items())]
        return "\n".join(lines)


@dataclass
class Unparked:
    """One unpark: files added, files already identical, local files replaced (and where they went)."""

    source: str
    added: list[str] = field(default_factory=list)
    identical: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    set_aside: str | None = None
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    parked_at: str = ""
    dry_run: bool = False  # nothing written: added and replaced are what an unpark would do
    foreign_results: int = 0  # signed job results whose digest is not this user's key: they would be recomputed

    def format(self) -> str:
        if self.dry_run:
            head = (
                f"dry run, nothing written: {self.source} (parked {self.parked_at}) verified; it would add "
                f"{len(self.added)} files, skip {len(self.identical)} identical ones, and {len(self.replaced)} "
                "differ from ROOT's (taken only with --force)"
                + (
                    f": {', '.join(self.replaced[:4])}{', ...' if len(self.replaced) > 4 else ''}"
                    if self.replaced
                    else ""
                )
            )
        else:
            head = (
                f"unparked {self.source} (parked {self.parked_at}): {len(self.added)} files added, "
                f"{len(self.identical)} already identical, {len(self.replaced)} replaced"
                + (f" (the local versions moved to {self.set_aside})" if self.set_aside else "")
            )
        lines = [head]
        lines += [f"  {name}: {_position(run)}" for name, run in sorted(self.runs.items())]
        if self.foreign_results:
            lines.append(
                f"  {self.foreign_results} job results (finished evaluation shards) were signed with another key than "
                "this user's: they will be computed again. To reuse them, set ARNAS_ZOO_JOB_KEY to the key of the "
                "machine that ran them (its ~/.cache/arnas-zoo/job-key), and unpark into the same ROOT path"
            )
        return "\n".join(lines)


def _position(run: dict[str, Any]) -> str:
    """As ``arnas-zoo status`` says it: the header counts finished epochs, the position is in the next one."""
    epoch, epochs = int(run.get("epoch") or 0), run.get("epochs")
    if epochs and epoch >= epochs:
        return f"{run.get('kind', 'run')} finished: {epoch} of {epochs} epochs"
    steps = run.get("steps_per_epoch") or "?"
    return f"{run.get('kind', 'run')} epoch {epoch + 1} of {epochs or '?'}, step {run.get('step')} of {steps}"


def _files(root: Path) -> list[str]:
    """ROOT's files to park, as sorted POSIX paths relative to ROOT (symlinks and skipped names left out)."""
    found: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".replaced-") and not Path(folder, d).is_symlink())
        for name in names:
            path = Path(folder, name)
            if not skipped(name) and path.is_file() and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


def _is_state(rel: str) -> bool:
    from arnas_zoo.run_status import STATE_FILES

    return rel.rsplit("/", 1)[-1] in STATE_FILES


def _copy_verified(src: Path, dst: Path, rel: str) -> None:
    """Copy one file; a resume state is copied until its copy verifies (it may be replaced mid-copy)."""
    from arnas_zoo.runs.state import read_state

    dst.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, COPY_TRIES + 1):
        shutil.copyfile(src, dst)
        if not _is_state(rel):
            return
        try:
            read_state(dst)
            return
        except CheckpointError as exc:
            if attempt == COPY_TRIES:
                why = f"its state did not verify in {COPY_TRIES} copies: {exc}"
                raise CheckpointError(f"{src}: not parked, {why}") from None


def _positions(staged: Path, files: list[str]) -> dict[str, dict[str, Any]]:
    from arnas_zoo.run_status import run_position

    runs: dict[str, dict[str, Any]] = {}
    for rel in files:
        if _is_state(rel):
            folder = rel.rsplit("/", 1)[0] if "/" in rel else "."
            pos = run_position(staged / folder)
            runs[folder] = {
                "kind": pos.kind,
                "epoch": pos.epoch,
                "step": pos.step,
                "epochs": pos.epochs,
                "steps_per_epoch": pos.steps_per_epoch,
            }
    return runs


def snapshot(root: str | os.PathLike[str], staged: str | os.PathLike[str]) -> dict[str, Any]:
    """Copy ROOT's parkable files into the empty folder ``staged``, verify its states, write its manifest."""
    from arnas_zoo import __version__

    root, staged = Path(root), Path(staged)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder of runs to park")
    files = _files(root)
    if not files:
        raise ConfigError(f"{root}: nothing to park (no files besides locks and temporary files)")
    for rel in files:
        with contextlib.suppress(FileNotFoundError):  # a file removed since the listing is not parked
            _copy_verified(root / rel, staged / rel, rel)
    files = [rel for rel in files if (staged / rel).is_file()]
    manifest = {
        "schema": SCHEMA,
        "parked_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": socket.gethostname(),
        "source": str(root.resolve()),
        "arnas_zoo": __version__,
        "files": {rel: {"bytes": (staged / rel).stat().st_size, "sha256": sha256_file(staged / rel)} for rel in files},
        "runs": _positions(staged, files),
    }
    atomic_write_json(staged / MANIFEST, manifest, sort_keys=True)
    return manifest


def verify_snapshot(folder: str | os.PathLike[str], extra_ok: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check a parked folder against its manifest (every file, size, digest, none beyond it; every state)."""
    from arnas_zoo.runs.state import read_state

    folder = Path(folder)
    manifest = read_manifest(folder)
    listed = manifest["files"]
    present = {Path(d, n).relative_to(folder).as_posix() for d, _, names in os.walk(folder) for n in names} - {
        MANIFEST,
        *extra_ok,
    }
    unlisted = sorted(p for p in present - set(listed) if not p.startswith(".cache/"))
    if unlisted:
        raise UntrustedFileError(f"{folder}: files not in {MANIFEST}: {', '.join(unlisted[:5])}")
    for rel, entry in listed.items():
        path = folder / rel
        if not path.is_file() or path.is_symlink():
            raise UntrustedFileError(f"{folder}: {rel} is listed in {MANIFEST} but missing")
        if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry["sha256"]:
            raise UntrustedFileError(f"{path}: differs from {MANIFEST} (size or SHA-256); the park is damaged")
        if _is_state(rel):
            read_state(path)
    return manifest


@contextlib.contextmanager
def _park_lock(root: Path) -> Iterator[None]:
    """One park of ROOT at a time (an flock on ROOT/.park.lock, released when the process ends)."""
    with open(root / PARK_LOCK, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusyError(f"{root}: another park of this folder is under way") from None
        yield


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def _park_to_folder(staged: Path, dest: Path, keep: int) -> str:
    parks = dest / "parks"
    parks.mkdir(parents=True, exist_ok=True)
    name = _stamp()
    tmp = parks / f".{name}.partial"
    shutil.copytree(staged, tmp)
    os.replace(tmp, parks / name)
    atomic_write_text(dest / "LATEST", name + "\n")
    done = sorted(p.name for p in parks.iterdir() if not p.name.startswith("."))
    for old in done[: max(0, len(done) - keep)]:
        if old != name:
            shutil.rmtree(parks / old, ignore_errors=True)
    return name


def _behind(previous: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """How ROOT is behind the last park: runs it lacks or has at an earlier (epoch, step), done markers gone."""
    if previous is None:
        return []
    reasons = []
    for name, was in sorted((previous.get("runs") or {}).items()):
        is_ = now["runs"].get(name)
        at = (was.get("epoch", 0), was.get("step", 0))
        if is_ is None or (is_.get("epoch", 0), is_.get("step", 0)) < at:
            here = "absent" if is_ is None else f"epoch {is_.get('epoch')} step {is_.get('step')}"
            reasons.append(f"{name}: parked at epoch {at[0]} step {at[1]}, here {here}")
    gone = sorted(f for f in previous.get("files") or {} if f.endswith(".done") and f not in now["files"])
    reasons += [f"{f}: parked, not here" for f in gone]
    return reasons


def _previous_in_folder(dest: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(_latest_in_folder(dest, None))
    except NothingParkedError:
        return None


def park(
    root: str | os.PathLike[str], dest: str, *, keep: int = 3, force: bool = False, token: str | None = None
) -> Parked:
    """Snapshot ROOT (see the module docstring) to ``dest``: a folder, or ``hf://org/name`` (a private repo).

    A park that would put ROOT behind the destination's last park (a run missing or at an earlier step,
    a done marker gone: a fresh machine that was not unparked first) is refused unless ``force``."""
    root = Path(root)
    if keep < 1:
        raise ConfigError(f"keep: at least 1 snapshot, got {keep}")
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder of runs to park")
    if not dest.startswith(HUB_PREFIX) and Path(dest).resolve().is_relative_to(root.resolve()):
        raise ConfigError(f"{dest}: inside {root}, so every park would hold the ones before it; park elsewhere")
    with _park_lock(root), tempfile.TemporaryDirectory(prefix="arnas-zoo-park-") as tmp:
        staged = Path(tmp) / "snapshot"
        manifest = snapshot(root, staged)
        hub = dest.startswith(HUB_PREFIX)
        if not force:
            if hub:
                from arnas_zoo.runs.park_hub import previous_manifest

                previous = previous_manifest(dest.removeprefix(HUB_PREFIX), Path(tmp), token=token)
            else:
                previous = _previous_in_folder(Path(dest))
            behind = _behind(previous, manifest)
            if behind:
                raise ConfigError(
                    f"{root} is behind the last park at {dest} ({'; '.join(behind[:3])}): unpark it first "
                    "(`arnas-zoo unpark DEST ROOT`), or pass --force to park it anyway"
                )
        if hub:
            from arnas_zoo.runs.park_hub import upload

            revision = upload(staged, dest.removeprefix(HUB_PREFIX), manifest, token=token)
        else:
            revision = _park_to_folder(staged, Path(dest), keep)
    files = manifest["files"]
    return Parked(
        dest=dest,
        files=len(files),
        bytes=sum(int(f["bytes"]) for f in files.values()),
        runs=manifest["runs"],
        at=manifest["parked_at"],
        revision=revision,
    )


def _latest_in_folder(dest: Path, at: str | None) -> Path:
    if at is None:
        try:
            at = (dest / "LATEST").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise NothingParkedError(f"{dest}: no LATEST; nothing has been parked here") from None
    if not at or "/" in at or at.startswith("."):
        raise UntrustedFileError(f"{dest}: bad snapshot name {at[:80]!r}")
    folder = dest / "parks" / at
    if not folder.is_dir():
        raise ConfigError(f"{dest}: no snapshot {at!r} (kept: {', '.join(sorted(os.listdir(dest / 'parks')))})")
    return folder


def _plan(root: Path, manifest: dict[str, Any], unparked: Unparked) -> list[str]:
    """Sort the parked files into ROOT's missing ones (added) and identical ones; return those that differ."""
    conflicts = []
    for rel, entry in sorted(manifest["files"].items()):
        local = root / rel
        if not local.exists():
            unparked.added.append(rel)
        elif local.is_file() and sha256_file(local) == entry["sha256"]:
            unparked.identical.append(rel)
        else:
            conflicts.append(rel)
    return conflicts


def _restore(staged: Path, root: Path, manifest: dict[str, Any], force: bool, unparked: Unparked) -> None:
    """Copy the verified snapshot into ROOT: add, skip identical, replace (moving the local version aside)."""
    conflicts = _plan(root, manifest, unparked)
    if conflicts and not force:
        raise ConfigError(
            f"{root}: {len(conflicts)} files differ from the parked ones ({', '.join(conflicts[:4])}"
            f"{', ...' if len(conflicts) > 4 else ''}); keep ROOT as it is, or pass --force to take the parked "
            "versions (ROOT's are moved aside, not deleted)"
        )
    if conflicts:
        aside = root / f".replaced-{_stamp()}"
        for rel in conflicts:
            (aside / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(root / rel, aside / rel)
        unparked.set_aside, unparked.replaced = str(aside), conflicts
    for rel in [*unparked.added, *conflicts]:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.unpark-{os.getpid()}.tmp")
        shutil.copyfile(staged / rel, tmp)
        os.replace(tmp, target)


def _foreign_results(staged: Path, files: dict[str, Any]) -> int:
    """How many signed job results (``.../jobs/KEY.json``) this user's key does not verify."""
    import json

    from arnas_zoo.jobs import JOBS_DIR, signed_with, signing_key

    key, count = signing_key(), 0
    for rel in files:
        parts = rel.split("/")
        if len(parts) >= 2 and parts[-2] == JOBS_DIR and rel.endswith(".json"):
            try:
                record = json.loads((staged / rel).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            count += isinstance(record, dict) and "digest" in record and not signed_with(key, record)
    return count


def unpark(
    source: str,
    root: str | os.PathLike[str],
    *,
    force: bool = False,
    at: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
) -> Unparked:
    """Bring the latest snapshot parked at ``source`` (or the one named ``at``) back into ROOT, verified first.

    ``dry_run``: verify the snapshot and say what would be added, skipped and replaced; write nothing."""
    root = Path(root)
    unparked = Unparked(source=source, dry_run=dry_run)
    with tempfile.TemporaryDirectory(prefix="unpark-") as tmp:
        if source.startswith(HUB_PREFIX):
            from arnas_zoo.runs.park_hub import download

            staged = download(source.removeprefix(HUB_PREFIX), Path(tmp), revision=at, token=token)
            manifest = verify_snapshot(staged, extra_ok=(".gitattributes",))
        else:
            staged = _latest_in_folder(Path(source), at)
            manifest = verify_snapshot(staged)
        unparked.foreign_results = _foreign_results(staged, manifest["files"])
        if dry_run:
            unparked.replaced = _plan(root, manifest, unparked)
        else:
            root.mkdir(parents=True, exist_ok=True)
            with _park_lock(root):
                _restore(staged, root, manifest, force, unparked)
    unparked.runs, unparked.parked_at = manifest.get("runs") or {}, str(manifest.get("parked_at", "?"))
    return unparked
