"""A small Hub-compatible HTTP server for tests: the endpoints `huggingface_hub` calls to upload and download.

The real Hub cannot be reached from this project's machines, so push/reload tests run against this server
on 127.0.0.1 (port 0). It implements exactly what `huggingface_hub` uses (read from its source, 2.x):

- `POST /api/repos/create`, `GET /api/whoami-v2`, `POST /api/validate-yaml`
- `GET /api/models/{repo}[/revision/{rev}]` (repo info), `GET /api/models/{repo}/tree/{rev}[/{path}]`
- `POST /api/models/{repo}/branch/{branch}`, `POST /api/models/{repo}/preupload/{rev}`
- `POST /api/models/{repo}/commit/{rev}` (NDJSON: header, file, lfsFile, deletedFile, deletedFolder)
- `POST /{repo}.git/info/lfs/objects/batch`, then `PUT` upload and `POST` verify on the hrefs it hands out
  (basic transfer; clients must set `HF_HUB_DISABLE_XET=1`, this server speaks no Xet)
- `HEAD`/`GET /{repo}/resolve/{rev}/{path}` with `ETag`, `X-Repo-Commit`, `Content-Length` and `Range`.

Files live on disk under `root` (content-addressed blobs + one JSON file per repo). A wrong token gets 401
("Invalid credentials in Authorization header", as the Hub says), a write without a token 401, an unknown
repo 404 `RepoNotFound`. Tests drive it only through `huggingface_hub`/`transformers`, never its handlers.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".png", ".jpg", ".gguf")
LFS_MIN_SIZE = 1_000_000  # larger files go through LFS whatever their name, as on the Hub


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An HTTP error with the headers huggingface_hub reads to pick its exception type."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class Store:
    """Repos, commits and blobs on disk. One lock: the server is small and tests are short."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "repos").mkdir(exist_ok=True)
        self.lock = threading.RLock()

    # -- repos ---------------------------------------------------------------------------------------------
    def _repo_file(self, repo_id: str) -> Path:
        return self.root / "repos" / (repo_id.replace("/", "--") + ".json")

    def exists(self, repo_id: str) -> bool:
        return self._repo_file(repo_id).exists()

    def load(self, repo_id: str) -> dict:
        path = self._repo_file(repo_id)
        if not path.exists():
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return json.loads(path.read_text())

    def save(self, repo_id: str, repo: dict) -> None:
        tmp = self._repo_file(repo_id).with_suffix(".tmp")
        tmp.write_text(json.dumps(repo))
        tmp.replace(self._repo_file(repo_id))

    def create(self, repo_id: str, private: bool) -> None:
        root_commit = self._commit_id({}, "initial commit", None)
        repo = {"private": private, "branches": {"main": root_commit},
                "commits": {root_commit: {"parent": None, "summary": "initial commit", "files": {}}}}
        self.save(repo_id, repo)

    @staticmethod
    def _commit_id(files: dict, summary: str, parent: str | None) -> str:
        payload = json.dumps([files, summary, parent, time.time_ns(), secrets.token_hex(4)], sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()

    def resolve(self, repo: dict, revision: str) -> str:
        if revision in repo["branches"]:
            return repo["branches"][revision]
        if revision in repo["commits"]:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def files(self, repo: dict, revision: str) -> tuple[str, dict]:
        sha = self.resolve(repo, revision)
        return sha, repo["commits"][sha]["files"]

    # -- blobs ---------------------------------------------------------------------------------------------
    def blob_path(self, key: str) -> Path:
        return self.root / "blobs" / key

    def put_blob(self, data: bytes, key: str) -> None:
        path = self.blob_path(key)
        if not path.exists():
            tmp = path.with_suffix(".tmp" + secrets.token_hex(4))
            tmp.write_bytes(data)
            tmp.replace(path)


class Handler(BaseHTTPRequestHandler):
    server: "HubServer"
    protocol_version = "HTTP/1.1"

    # -- plumbing ------------------------------------------------------------------------------------------
    def log_message(self, format, *args):  # keep test output quiet
        self.server.requests.append(f"{self.command} {self.path}")

    def _body(self) -> bytes:
        """The request body (read once, before routing, so an early error never leaves it in the socket)."""
        return self._payload

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _token(self, required: bool) -> str | None:
        """The bearer token if valid; a wrong one is always refused, a missing one only when `required`."""
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        if token is not None and token != self.server.token:
            raise HubError(401, "Invalid credentials in Authorization header")
        if token is None and required:
            raise HubError(401, "You must be authenticated to do this (no token given)")
        return token

    def _readable(self, repo_id: str) -> dict:
        token = self._token(required=False)
        repo = self.server.store.load(repo_id)
        if repo["private"] and token is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _dispatch(self) -> None:
        self.server.touch()
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        raw = url.path
        with self.server.store.lock:
            for method, pattern, handler in ROUTES:
                if method != self.command and not (method == "GET" and self.command == "HEAD"):
                    continue
                m = re.fullmatch(pattern, raw)
                if m:
                    return handler(self, *[unquote(g) if g is not None else None for g in m.groups()], query=query)
        raise HubError(404, f"No route for {self.command} {path}")

    def _handle(self) -> None:
        self._payload = self._read_body() if self.command in ("POST", "PUT") else b""
        try:
            self._dispatch()
        except HubError as e:
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._json({"error": e.message}, e.status, headers)

    do_GET = do_HEAD = do_POST = do_PUT = _handle

    # -- account -------------------------------------------------------------------------------------------
    def whoami(self, query):
        self._token(required=True)
        self._json({"type": "user", "name": self.server.user, "auth": {"accessToken": {"role": "write"}}})

    def validate_yaml(self, query):
        self._token(required=False)
        content = json.loads(self._body())["content"]
        match = re.match(r"^---\n(.*?)\n---", content, re.S)
        try:
            if match:
                yaml.safe_load(match.group(1))
        except yaml.YAMLError as e:
            return self._json({"errors": [{"message": str(e)}]}, 400)
        self._json({"errors": [], "warnings": []})

    # -- repos ---------------------------------------------------------------------------------------------
    def create_repo(self, query):
        self._token(required=True)
        data = json.loads(self._body())
        if data.get("type", "model") != "model":
            raise HubError(400, "this test server hosts model repos only")
        repo_id = f"{data.get('organization') or self.server.user}/{data['name']}"
        if self.server.store.exists(repo_id):
            raise HubError(409, "You already created this model repo")
        self.server.store.create(repo_id, private=data.get("visibility", "public") == "private" or
                                 bool(data.get("private")))
        self._json({"url": f"{self.server.url}/{repo_id}", "name": repo_id})

    def repo_info(self, repo_id, revision, query):
        repo = self._readable(repo_id)
        sha, files = self.server.store.files(repo, revision or "main")
        self._json({"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo["private"],
                    "siblings": [{"rfilename": p} for p in sorted(files)], "tags": [], "likes": 0, "downloads": 0})

    def tree(self, repo_id, revision, sub, query):
        repo = self._readable(repo_id)
        _, files = self.server.store.files(repo, revision)
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        prefix = (sub.strip("/") + "/") if sub else ""
        entries, folders = [], set()
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                if recursive or i == 1:
                    folders.add(prefix + "/".join(parts[:i]))
            if len(parts) > 1 and not recursive:
                continue
            info = files[path]
            entry = {"type": "file", "path": path, "size": info["size"], "oid": info["oid"]}
            if info.get("lfs"):
                entry["lfs"] = {"oid": info["lfs"], "size": info["size"], "pointerSize": 134}
            entries.append(entry)
        entries += [{"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()} for f in sorted(folders)]
        self._json(entries)

    def create_branch(self, repo_id, branch, query):
        self._token(required=True)
        repo = self.server.store.load(repo_id)
        if branch in repo["branches"]:
            raise HubError(409, f"Reference {branch} already exists")
        body = self._body()
        start = (json.loads(body).get("startingPoint") if body else None) or "main"
        repo["branches"][branch] = self.server.store.resolve(repo, start)
        self.server.store.save(repo_id, repo)
        self._json({})

    # -- uploads -------------------------------------------------------------------------------------------
    def preupload(self, repo_id, revision, query):
        self._token(required=True)
        repo = self.server.store.load(repo_id)
        _, files = self.server.store.files(repo, revision)
        out = []
        for f in json.loads(self._body())["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_SIZE or b"\0" in sample
            existing = files.get(f["path"])
            oid = (existing.get("lfs") or existing["oid"]) if existing else None
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": out})

    def lfs_batch(self, repo_id, query):
        self._token(required=True)
        self.server.store.load(repo_id)
        data = json.loads(self._body())
        if data.get("operation") != "upload":
            raise HubError(400, "this test server only accepts LFS uploads")
        objects = []
        for obj in data["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if not self.server.store.blob_path(obj["oid"]).exists():
                ticket = secrets.token_urlsafe(16)
                self.server.tickets[ticket] = (obj["oid"], obj["size"])
                entry["actions"] = {
                    "upload": {"href": f"{self.server.url}/__lfs/{obj['oid']}?ticket={ticket}"},
                    "verify": {"href": f"{self.server.url}/__lfs/verify"},
                }
            objects.append(entry)
        self._json({"transfer": "basic", "objects": objects})

    def lfs_upload(self, oid, query):
        ticket = query.get("ticket", [""])[0]
        if self.server.tickets.get(ticket, (None,))[0] != oid:
            raise HubError(403, "Invalid or expired upload ticket")
        data = self._body()
        expected_size = self.server.tickets.pop(ticket)[1]
        if hashlib.sha256(data).hexdigest() != oid or len(data) != expected_size:
            raise HubError(400, "Uploaded content does not match its sha256/size")
        self.server.store.put_blob(data, oid)
        self._send(200)

    def lfs_verify(self, query):
        self._token(required=True)
        data = json.loads(self._body())
        path = self.server.store.blob_path(data["oid"])
        if not path.exists() or path.stat().st_size != data["size"]:
            raise HubError(404, f"LFS object {data['oid']} was not uploaded")
        self._json({})

    def commit(self, repo_id, revision, query):
        self._token(required=True)
        store = self.server.store
        repo = store.load(repo_id)
        if revision not in repo["branches"]:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        parent = repo["branches"][revision]
        files = dict(repo["commits"][parent]["files"])
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item["key"] == "header"), None)
        if header is None:
            raise HubError(400, "commit payload has no header line")
        if header.get("parentCommit") not in (None, parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                data = base64.b64decode(value["content"])
                oid = git_blob_sha1(data)
                store.put_blob(data, oid)
                files[value["path"]] = {"oid": oid, "size": len(data), "lfs": None}
            elif key == "lfsFile":
                blob = store.blob_path(value["oid"])
                if not blob.exists():
                    raise HubError(422, f"LFS file {value['path']} ({value['oid']}) was never uploaded")
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{value['oid']}\nsize {blob.stat().st_size}\n"
                files[value["path"]] = {"oid": git_blob_sha1(pointer.encode()), "size": blob.stat().st_size,
                                        "lfs": value["oid"]}
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: f for p, f in files.items() if not p.startswith(prefix)}
            elif key != "header":
                raise HubError(400, f"unknown commit operation {key!r}")
        sha = store._commit_id(files, header.get("summary", ""), parent)
        repo["commits"][sha] = {"parent": parent, "summary": header.get("summary", ""), "files": files}
        repo["branches"][revision] = sha
        store.save(repo_id, repo)
        self._json({"commitUrl": f"{self.server.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                    "success": True, "pullRequestUrl": None})

    # -- downloads -----------------------------------------------------------------------------------------
    def resolve(self, repo_id, revision, filename, query):
        repo = self._readable(repo_id)
        sha, files = self.server.store.files(repo, revision)
        if filename not in files:
            raise HubError(404, f"{filename} does not exist at {revision}", "EntryNotFound")
        info = files[filename]
        data_path = self.server.store.blob_path(info.get("lfs") or info["oid"])
        size = data_path.stat().st_size
        etag = info.get("lfs") or info["oid"]
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if info.get("lfs"):
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = size
        start = 0
        rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if rng and self.command == "GET":
            start = min(int(rng.group(1)), size)
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        headers["Content-Length"] = size - start
        body = b"" if self.command == "HEAD" else data_path.read_bytes()[start:]
        self._send(206 if start else 200, body, headers, content_type="application/octet-stream")


REPO = r"([^/]+/[^/]+)"
SEG = r"([^/]+)"
ROUTES = [
    ("GET", r"/api/whoami-v2", Handler.whoami),
    ("POST", r"/api/validate-yaml", Handler.validate_yaml),
    ("POST", r"/api/repos/create", Handler.create_repo),
    ("GET", rf"/api/models/{REPO}(?:/revision/{SEG})?", Handler.repo_info),
    ("GET", rf"/api/models/{REPO}/tree/{SEG}(?:/(.+))?", Handler.tree),
    ("POST", rf"/api/models/{REPO}/branch/{SEG}", Handler.create_branch),
    ("POST", rf"/api/models/{REPO}/preupload/{SEG}", Handler.preupload),
    ("POST", rf"/api/models/{REPO}/commit/{SEG}", Handler.commit),
    ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", Handler.lfs_batch),
    ("POST", r"/__lfs/verify", Handler.lfs_verify),
    ("PUT", r"/__lfs/([0-9a-f]{64})", Handler.lfs_upload),
    ("GET", rf"/{REPO}/resolve/{SEG}/(.+)", Handler.resolve),
]


class HubServer(ThreadingHTTPServer):
    """`with HubServer(tmp_path, token="hf_test") as hub: ... hub.url ...`; stops on exit or after `idle_s`."""

    daemon_threads = True

    def __init__(self, root: Path, token: str, user: str = "user", idle_s: float = 600.0):
        super().__init__(("127.0.0.1", 0), Handler)
        self.store, self.token, self.user, self.idle_s = Store(root), token, user, idle_s
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.tickets: dict[str, tuple[str, int]] = {}
        self.requests: list[str] = []
        self._last = time.monotonic()
        self._thread = threading.Thread(target=self._serve, name="hub-server", daemon=True)

    def touch(self) -> None:
        self._last = time.monotonic()

    def _serve(self) -> None:
        self.timeout = 0.5
        while not self._stop and time.monotonic() - self._last < self.idle_s:
            self.handle_request()
        self.server_close()

    def handle_timeout(self) -> None:  # handle_request returns after `timeout`: lets the loop check for stop
        pass

    def start(self) -> "HubServer":
        self._stop = False
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """What a repo holds at `revision` (for assertions only; uploads and downloads go over HTTP)."""
        sha, files = self.store.files(self.store.load(repo_id), revision)
        return {p: self.store.blob_path(f.get("lfs") or f["oid"]).read_bytes() for p, f in files.items()}

    def repo_exists(self, repo_id: str) -> bool:
        return self.store.exists(repo_id)


def client_env(hub: HubServer, home: Path, token: str | None = None) -> dict[str, str]:
    """Environment for a fresh Python process that talks to `hub` as its Hub (own cache under `home`)."""
    import os

    tests_dir = str(Path(__file__).resolve().parent)
    return {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(home),
        "HF_TOKEN": token or hub.token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]),
    }
