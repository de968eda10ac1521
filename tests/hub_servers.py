"""Hub servers on 127.0.0.1 for the Hub tests; never the internet.

Two servers, both on free local ports:

- **olah** (``pip install olah``, a real, self-hosted Hugging Face Hub mirror) in offline mode,
  serving local git repositories from its ``mirrors`` folder (``models/<org>/<name>``). Every
  download in the tests (``snapshot_download``: revision info, file resolution, tags, commits) goes
  through it, so loading is tested against a Hub-compatible server that we did not write.
- :class:`HubUploadDouble`, a TEST DOUBLE written here: a small ``http.server`` that implements the
  write endpoints ``huggingface_hub`` calls when publishing (``POST /api/repos/create``,
  ``/api/validate-yaml``, ``/api/models/{repo}/preupload/{rev}``, ``/api/models/{repo}/commit/{rev}``
  with its NDJSON body, ``/api/models/{repo}/tag/{rev}``). Each commit becomes a real git commit in
  olah's mirrors folder, so what was uploaded is then downloaded through olah. It answers
  ``uploadMode: regular`` to every preupload (files travel base64 inside the NDJSON commit; no LFS
  or Xet storage is emulated) and supports commits to ``main`` only. Given ``read_from`` (olah's
  endpoint), it passes every GET and HEAD on to olah, so one endpoint both writes and reads, as the Hub
  does (a park reads the last park's manifest before it writes).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

GIT_ENV = {
    "GIT_AUTHOR_NAME": "hub-double",
    "GIT_AUTHOR_EMAIL": "hub-double@127.0.0.1",
    "GIT_COMMITTER_NAME": "hub-double",
    "GIT_COMMITTER_EMAIL": "hub-double@127.0.0.1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo)}
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_git_repo(mirrors: Path, repo_id: str) -> Path:
    """An empty model repo as the Hub creates one: a first commit holding .gitattributes."""
    path = mirrors / "models" / repo_id
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial commit")
    return path


def commit_files(repo: Path, files: dict[str, bytes], message: str) -> str:
    """Write ``files`` into the work tree of ``repo`` and commit them; returns the commit id."""
    for name, content in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


# ---- olah: the real Hub-compatible server used for downloads -------------------------------------
class OlahServer:
    """An olah process serving ``mirrors/models/<org>/<name>`` git repos offline on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mirrors = root / "mirrors"
        self.mirrors.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        olah = shutil.which("olah-cli") or str(Path(sys.executable).with_name("olah-cli"))
        if not Path(olah).exists():
            raise RuntimeError("olah-cli not found: pip install olah (a dev dependency of the Hub tests)")
        config = self.root / "olah.toml"
        config.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.port}\n"
            f'repos-path = "{self.root / "cache"}"\n'
            'mirror-scheme = "http"\n'
            f'mirror-netloc = "127.0.0.1:{self.port}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n'
            # Branch -> commit answers must follow new commits at once (uploads happen mid-test).
            "metadata-cache-ttl = 0\n"
            "[accessibility]\n"
            # Never contact huggingface.co: only the local mirrors exist.
            "offline = true\n"
        )
        self.log = open(self.root / "olah.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [olah, "-c", str(config)], cwd=self.root, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"olah exited early: {(self.root / 'olah.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"olah did not start within {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if hasattr(self, "log"):
            self.log.close()


# ---- the upload test double ------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server: _DoubleHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        self.server.requests.append(f"{self.command} {self.path}")

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:
            # huggingface_hub reads the error message from this header
            self.send_header("X-Error-Message", str(body.get("error", "")))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorised(self) -> bool:
        expected = self.server.token
        if expected is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {expected}":
            return True
        self._reply(401, {"error": "Invalid credentials in Authorization header"})
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.server.read_from is None:
            return self._reply(404, {"error": "the upload test double serves no downloads; use olah"})
        self._forward()

    def do_HEAD(self) -> None:  # noqa: N802
        if self.server.read_from is None:
            return self._reply(404, {"error": "the upload test double serves no downloads; use olah"})
        self._forward()

    def _forward(self) -> None:
        """Pass a read on to olah (``read_from``) unchanged, so one endpoint both writes and reads."""
        import urllib.error
        import urllib.request

        class _NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None  # the client follows redirects itself, to olah's own address

        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")}
        request = urllib.request.Request(self.server.read_from + self.path, headers=headers, method=self.command)
        try:
            answer = urllib.request.build_opener(_NoRedirect).open(request, timeout=30)
        except urllib.error.HTTPError as exc:
            answer = exc
        body = answer.read()
        self.send_response(answer.status)
        for key, value in answer.headers.items():
            if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                self.send_header(key, value)
        # a HEAD answer states the size of the body a GET would bring
        size = answer.headers.get("Content-Length", "0") if self.command == "HEAD" else str(len(body))
        self.send_header("Content-Length", size)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        path = unquote(urlsplit(self.path).path)
        body = self._body()
        if not self._authorised():
            return
        if path == "/api/validate-yaml":
            return self._reply(200, {"errors": [], "warnings": []})
        if path == "/api/repos/create":
            return self._create(json.loads(body))
        parts = path.split("/")
        # /api/models/<org>/<name>/<action>/<revision...>
        if len(parts) >= 7 and parts[:3] == ["", "api", "models"]:
            repo_id, action, revision = f"{parts[3]}/{parts[4]}", parts[5], "/".join(parts[6:])
            repo = self.server.mirrors / "models" / repo_id
            if not repo.is_dir():
                return self._reply(404, {"error": "Repository not found"})
            if action == "preupload":
                files = json.loads(body)["files"]
                return self._reply(
                    200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
                )
            if action == "tag":
                return self._tag(repo, revision, json.loads(body))
            if revision != "main":
                return self._reply(400, {"error": f"the test double commits to 'main' only, got {revision!r}"})
            if action == "commit":
                return self._commit(repo_id, repo, body)
        return self._reply(404, {"error": f"not implemented by the test double: POST {path}"})

    def _create(self, payload: dict[str, Any]) -> None:
        repo_id = f"{payload.get('organization')}/{payload['name']}"
        path = self.server.mirrors / "models" / repo_id
        if path.exists():
            return self._reply(
                409, {"error": "You already created this model repo", "url": f"{self.server.endpoint}/{repo_id}"}
            )
        make_git_repo(self.server.mirrors, repo_id)
        self.server.created[repo_id] = payload
        return self._reply(200, {"url": f"{self.server.endpoint}/{repo_id}", "name": repo_id})

    def _commit(self, repo_id: str, repo: Path, body: bytes) -> None:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        summary = "upload"
        files: dict[str, bytes] = {}
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                summary = value.get("summary") or summary
            elif key == "file":
                if value.get("encoding") != "base64":
                    return self._reply(400, {"error": f"unsupported encoding {value.get('encoding')!r}"})
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                (repo / value["path"]).unlink(missing_ok=True)
            else:
                return self._reply(400, {"error": f"the test double does not implement commit operation {key!r}"})
        commit = commit_files(repo, files, summary)
        return self._reply(
            200,
            {
                "success": True,
                "commitOid": commit,
                "commitUrl": f"{self.server.endpoint}/{repo_id}/commit/{commit}",
                "pullRequestUrl": None,
            },
        )

    def _tag(self, repo: Path, revision: str, payload: dict[str, Any]) -> None:
        tag = payload["tag"]
        if tag in git(repo, "tag", "--list").split():
            return self._reply(409, {"error": f"Tag {tag} already exists"})
        try:
            commit = git(repo, "rev-parse", "--verify", f"{revision}^{{commit}}")
        except subprocess.CalledProcessError:
            return self._reply(404, {"error": f"Invalid rev id: {revision}"})
        git(repo, "tag", tag, commit)
        return self._reply(200, {})


class _DoubleHTTPServer(ThreadingHTTPServer):
    read_from: str | None
    mirrors: Path
    endpoint: str
    token: str | None
    requests: list[str]
    created: dict[str, dict[str, Any]]


class HubUploadDouble:
    """The upload test double (see the module docstring), writing git repos into ``mirrors``."""

    def __init__(self, mirrors: Path, token: str | None = None, read_from: str | None = None) -> None:
        self.server = _DoubleHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.read_from = read_from  # olah's endpoint: reads are passed on to it (None: no reads)
        self.server.mirrors = mirrors
        self.server.token = token
        self.server.requests = []
        self.server.created = {}
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.server.endpoint = self.endpoint
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def requests(self) -> list[str]:
        return self.server.requests

    @property
    def created(self) -> dict[str, dict[str, Any]]:
        return self.server.created

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def running(server: OlahServer | HubUploadDouble) -> Iterator[Any]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
