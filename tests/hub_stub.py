"""A stand-in for the Hugging Face Hub API on 127.0.0.1 (test scaffolding, never shipped).

It implements just what `huggingface_hub` 2.4 calls for `create_repo`, `create_branch`,
`upload_folder` without Xet (`HF_HUB_DISABLE_XET=1`: preupload, README metadata validation, the
LFS batch API with basic PUT transfers and verify, the NDJSON commit) and for downloads
(`repo_info` at `/api/models/{repo}[/revision/{rev}]`, HEAD/GET `/{repo}/resolve/{rev}/{path}` with
the ETag / X-Repo-Commit / X-Linked-* / Content-Length headers `hf_hub_download` reads, and the
X-Error-Code headers that make a missing file an `EntryNotFoundError`).

Loopback only, threaded, every socket with a timeout, and a watchdog that stops the server after
`lifetime` seconds whatever happens. Every request is recorded in `requests` (method, path).

    with HubStub(token="hf_test") as hub:      # hub.endpoint = "http://127.0.0.1:<port>"
        ...                                    # point HF_ENDPOINT at hub.endpoint
        hub.files("user/repo")                 # {path: bytes} at the head of main
"""

import base64
import hashlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")
LFS_MIN_SIZE = 10 * 1024 * 1024
STUB_USER = "stub-user"


def git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class _Repo:
    def __init__(self, repo_id: str, private: bool):
        self.repo_id, self.private = repo_id, private
        initial = hashlib.sha1(f"init {repo_id}".encode()).hexdigest()
        self.commits = {initial: {}}  # commit sha -> {path: ("regular", bytes) | ("lfs", sha256)}
        self.branches = {"main": initial}

    def resolve(self, revision: str) -> str | None:
        revision = unquote(revision)
        return self.branches.get(revision) or (revision if revision in self.commits else None)


class HubStub:
    """See the module docstring. `reject_commits=(status, text)` makes every commit fail that way."""

    def __init__(self, token: str, lifetime: float = 300.0, reject_commits: tuple[int, str] | None = None):
        self.token, self.lifetime, self.reject_commits = token, lifetime, reject_commits
        self.repos: dict[str, _Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = None
        self.connections: set = set()  # open client sockets, closed on exit (keep-alive would outlive the server)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "HubStub":
        stub = self

        class Handler(_Handler):
            hub = stub

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        self.watchdog = threading.Timer(self.lifetime, self.server.shutdown)
        self.watchdog.daemon = True
        self.watchdog.start()
        return self

    def __exit__(self, *exc) -> None:
        self.watchdog.cancel()
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            for connection in list(self.connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.thread.join(timeout=5)

    # ------------------------------------------------------------------ inspection

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        tree = repo.commits[repo.resolve(revision)]
        return {path: self._content(entry) for path, entry in tree.items()}

    def commit_requests(self) -> list[str]:
        return [path for method, path in self.requests if method == "POST" and "/commit/" in path]

    def _content(self, entry) -> bytes:
        kind, value = entry
        return value if kind == "regular" else self.lfs[value]


class _Handler(BaseHTTPRequestHandler):
    hub: HubStub
    timeout = 30  # seconds per socket operation
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def setup(self) -> None:
        super().setup()
        with self.hub.lock:
            self.hub.connections.add(self.connection)

    def finish(self) -> None:
        with self.hub.lock:
            self.hub.connections.discard(self.connection)
        super().finish()

    # ------------------------------------------------------------------ plumbing

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, data, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, message: str, code: str | None = None, head: bool = False) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.hub.token}":
            return True
        self._error(401, "Invalid credentials in Authorization header")
        return False

    def _repo(self, repo_id: str, head: bool = False) -> _Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, f"Repository not found: {repo_id}", "RepoNotFound", head=head)
        elif repo.private and self.headers.get("Authorization") != f"Bearer {self.hub.token}":
            self._error(404, f"Repository not found: {repo_id}", "RepoNotFound", head=head)
            return None
        return repo

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path
        with self.hub.lock:
            self.hub.requests.append((method, path))
        routes = [
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+|[^/]+)/revision/(?P<rev>[^/]+)", self._repo_info),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+|[^/]+)", self._repo_info),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+|[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<folder>.+))?", self._tree),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+|[^/]+)/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+|[^/]+)/commit/(?P<rev>[^/]+)", self._commit),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+|[^/]+)/branch/(?P<branch>[^/]+)", self._create_branch),
            ("POST", r"/(?P<repo>[^/]+/[^/]+|[^/]+)\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/__lfs__/(?P<oid>[0-9a-f]{64})", self._lfs_put),
            ("POST", r"/__lfs_verify__", self._lfs_verify),
            ("GET", r"/(?P<repo>[^/]+/[^/]+|[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
            ("HEAD", r"/(?P<repo>[^/]+/[^/]+|[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
        ]
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                handler(**{key: unquote(value) for key, value in match.groupdict().items()})
                return
        self._body()
        self._error(404, f"hub stub: no route for {method} {path}")

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    # ------------------------------------------------------------------ endpoints

    def _create_repo(self) -> None:
        payload = json.loads(self._body() or b"{}")
        if not self._authorized():
            return
        repo_id = f"{payload.get('organization') or STUB_USER}/{payload['name']}"
        url = f"{self.hub.endpoint}/{repo_id}"
        with self.hub.lock:
            if repo_id in self.hub.repos:
                self._json(409, {"error": "You already created this model repo", "url": url})
                return
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            self.hub.repos[repo_id] = _Repo(repo_id, private)
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self) -> None:
        content = json.loads(self._body() or b"{}").get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, flags=re.S)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else None
        except yaml.YAMLError as error:
            self._json(400, {"errors": [{"message": f"invalid YAML: {error}"}]})
            return
        if not isinstance(metadata, dict):
            self._json(200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
            return
        self._json(200, {"errors": [], "warnings": []})

    def _repo_info(self, repo: str, rev: str = "main") -> None:
        found = self._repo(repo)
        if found is None:
            return
        sha = found.resolve(rev)
        if sha is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return
        siblings = [{"rfilename": path} for path in sorted(found.commits[sha])]
        self._json(
            200,
            {
                "id": repo,
                "modelId": repo,
                "sha": sha,
                "private": found.private,
                "siblings": siblings,
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "lastModified": "2026-01-01T00:00:00.000Z",
                "createdAt": "2026-01-01T00:00:00.000Z",
            },
        )

    def _tree(self, repo: str, rev: str, folder: str | None = None) -> None:
        found = self._repo(repo)
        if found is None:
            return
        sha = found.resolve(rev)
        if sha is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return
        prefix = folder.rstrip("/") + "/" if folder else ""
        entries = []
        for path, entry in sorted(found.commits[sha].items()):
            if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                content = self.hub._content(entry)
                item = {"type": "file", "path": path, "size": len(content), "oid": git_blob_sha(content)}
                if entry[0] == "lfs":
                    item["lfs"] = {"oid": entry[1], "size": len(content), "pointerSize": 134}
                entries.append(item)
        if folder and not entries:
            self._error(404, f"Entry not found: {folder}", "EntryNotFound")
            return
        self._json(200, entries)

    def _preupload(self, repo: str, rev: str) -> None:
        payload = json.loads(self._body() or b"{}")
        if not self._authorized() or self._repo(repo) is None:
            return
        files = []
        for entry in payload.get("files", []):
            lfs = entry["path"].endswith(LFS_SUFFIXES) or entry["size"] >= LFS_MIN_SIZE
            files.append({"path": entry["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
        self._json(200, {"files": files, "commitOid": None})

    def _lfs_batch(self, repo: str) -> None:
        payload = json.loads(self._body() or b"{}")
        if not self._authorized() or self._repo(repo) is None:
            return
        objects = []
        for item in payload.get("objects", []):
            entry = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.hub.lfs:
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.endpoint}/__lfs__/{item['oid']}", "header": {}},
                    "verify": {"href": f"{self.hub.endpoint}/__lfs_verify__", "header": {}},
                }
            objects.append(entry)
        self._json(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_put(self, oid: str) -> None:
        body = self._body()
        if hashlib.sha256(body).hexdigest() != oid:
            self._error(400, f"uploaded content does not match oid {oid}")
            return
        with self.hub.lock:
            self.hub.lfs[oid] = body
        self._send(200)

    def _lfs_verify(self) -> None:
        payload = json.loads(self._body() or b"{}")
        stored = self.hub.lfs.get(payload.get("oid"))
        if stored is None or len(stored) != payload.get("size"):
            self._error(404, f"LFS object {payload.get('oid')} was not uploaded")
            return
        self._json(200, {"success": True})

    def _commit(self, repo: str, rev: str) -> None:
        body = self._body()
        if not self._authorized():
            return
        found = self._repo(repo)
        if found is None:
            return
        if self.hub.reject_commits is not None:
            status, text = self.hub.reject_commits
            self._error(status, text)
            return
        head = found.resolve(rev)
        if head is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return
        tree = dict(found.commits[head])
        for line in body.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file":
                tree[value["path"]] = ("regular", base64.b64decode(value["content"]))
            elif item["key"] == "lfsFile":
                if value["oid"] not in self.hub.lfs:
                    self._error(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                    return
                tree[value["path"]] = ("lfs", value["oid"])
            elif item["key"] in ("deletedFile", "deletedFolder"):
                tree = {path: entry for path, entry in tree.items() if path != value["path"]
                        and not path.startswith(value["path"].rstrip("/") + "/")}  # fmt: skip
        sha = hashlib.sha1(body + head.encode() + str(time.time()).encode()).hexdigest()
        with self.hub.lock:
            found.commits[sha] = tree
            found.branches[unquote(rev)] = sha
        self._json(200, {"commitUrl": f"{self.hub.endpoint}/{repo}/commit/{sha}", "commitOid": sha, "success": True})

    def _create_branch(self, repo: str, branch: str) -> None:
        self._body()
        if not self._authorized():
            return
        found = self._repo(repo)
        if found is None:
            return
        if branch in found.branches:
            self._error(409, f"Reference already exists: {branch}")
            return
        found.branches[branch] = found.branches["main"]
        self._json(200, {})

    def _resolve(self, repo: str, rev: str, file: str) -> None:
        head = self.command == "HEAD"
        found = self._repo(repo, head=head)
        if found is None:
            return
        sha = found.resolve(rev)
        if sha is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound", head=head)
            return
        entry = found.commits[sha].get(file)
        if entry is None:
            self._error(404, f"Entry not found: {file}", "EntryNotFound", head=head)
            return
        content = self.hub._content(entry)
        headers = {"X-Repo-Commit": sha, "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if entry[0] == "lfs":
            headers.update({"ETag": f'"{entry[1]}"', "X-Linked-Etag": f'"{entry[1]}"', "X-Linked-Size": len(content)})
        else:
            headers["ETag"] = f'"{git_blob_sha(content)}"'
        self._send(200, content, headers, head=head)
