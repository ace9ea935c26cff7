"""A Hugging Face Hub-compatible server for the tests: Starlette app, uvicorn in a thread, 127.0.0.1 only.

It speaks what the real ``huggingface_hub`` client (2.x) needs to publish and fetch model repos (see
``shared/reference/hub-protocol.md``): create repo, preupload (with the remote oids that let the client skip
unchanged files), LFS batch + PUT + verify, NDJSON commits, validate-yaml, model info, tree, paths-info, and
``resolve`` HEAD/GET with Range, ETag / X-Linked-Etag / X-Linked-Size / X-Repo-Commit and X-Error-Code 404s.

Faults are injected per test: ``fail`` (answer an HTTP error), ``tamper`` (serve other bytes of the same size
while the metadata stays truthful, as a corrupted mirror or a man in the middle would), ``truncate`` (serve a
short body). ``requests`` records every request so tests can count downloads.
"""
import base64
import hashlib
import json
import re
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import parse_qs, unquote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_LFS_SUFFIXES = ('.safetensors', '.bin', '.pth', '.pt', '.ckpt', '.onnx')


def git_blob_sha1(data: bytes) -> str:
    """git's object id of a blob, what the Hub reports as the ETag of a regular (non-LFS) file."""
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:
        # The oid preupload and the tree report: sha256 for LFS files, git sha1 for regular ones.
        return self.sha256 if self.lfs else git_blob_sha1(self.data)


@dataclass
class Repo:
    private: bool = False
    branches: Dict[str, str] = field(default_factory=dict)
    commits: Dict[str, Dict[str, StoredFile]] = field(default_factory=dict)


class HubServer:
    """The in-process Hub. Repos live in memory for the server's lifetime; tests use unique repo names."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.endpoint = f'http://{host}:{port}'
        self.repos: Dict[str, Repo] = {}
        self.lfs_objects: Dict[str, bytes] = {}
        self.requests: List[Tuple[str, str]] = []
        self._faults: List[Callable[[Request], Optional[Response]]] = []
        self._tampered: Dict[Tuple[str, str], bytes] = {}
        self._truncated: Dict[Tuple[str, str], int] = {}
        self.releases: Dict[str, bytes] = {}  # release-style downloads: name -> bytes, served at /releases/<name>
        self._lock = threading.Lock()
        self._server: Optional[uvicorn.Server] = None
        self._thread: Optional[threading.Thread] = None

    # ---- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> 'HubServer':
        config = uvicorn.Config(self.app(), log_level='warning', lifespan='off')
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={'sockets': [self.sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError('the test Hub server did not start')
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    # ---- fault injection -----------------------------------------------------------------------------------------
    @contextmanager
    def fail(self, status: int, path_pattern: str = '.*', method: Optional[str] = None,
             retry_after: Optional[int] = None) -> Iterator[None]:
        """Answer ``status`` to every request whose path matches ``path_pattern`` (and method, if given), with a
        ``Retry-After`` header if ``retry_after`` is given (seconds, as the real Hub sends with a 5xx or 429)."""
        pattern = re.compile(path_pattern)
        headers = {} if retry_after is None else {'Retry-After': str(retry_after)}

        def fault(request: Request) -> Optional[Response]:
            if pattern.search(request.url.path) and (method is None or request.method == method):
                return JSONResponse({'error': f'injected {status}'}, status_code=status, headers=headers)
            return None

        self._faults.append(fault)
        try:
            yield
        finally:
            self._faults.remove(fault)

    @contextmanager
    def tamper(self, repo_id: str, path: str, data: bytes) -> Iterator[None]:
        """Serve ``data`` as the content of ``path`` in every revision, with the true metadata (size, sha256)."""
        self._tampered[(repo_id, path)] = data
        try:
            yield
        finally:
            del self._tampered[(repo_id, path)]

    @contextmanager
    def truncate(self, repo_id: str, path: str, size: int) -> Iterator[None]:
        """Send only the first ``size`` bytes of ``path`` on GET, while HEAD announces the full size."""
        self._truncated[(repo_id, path)] = size
        try:
            yield
        finally:
            del self._truncated[(repo_id, path)]

    def count(self, method: str, path_pattern: str) -> int:
        """How many requests with ``method`` had a path matching ``path_pattern``."""
        pattern = re.compile(path_pattern)
        return sum(1 for m, p in list(self.requests) if m == method and pattern.search(p))

    # ---- repo helpers --------------------------------------------------------------------------------------------
    def head(self, repo_id: str, revision: str = 'main') -> str:
        """The commit a branch points at."""
        return self.repos[repo_id].branches[revision]

    def _resolve(self, repo_id: str, revision: str) -> Tuple[Optional[Repo], Optional[str], Optional[Response]]:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, None, _error(404, 'RepoNotFound', f'Repository {repo_id} not found')
        revision = unquote(revision)
        commit = repo.branches.get(revision) or (revision if revision in repo.commits else None)
        if commit is None:
            return repo, None, _error(404, 'RevisionNotFound', f'Invalid rev id: {revision}')
        return repo, commit, None

    def _commit(self, repo: Repo, parent: Optional[str], files: Dict[str, StoredFile], message: str) -> str:
        listing = json.dumps({'parent': parent, 'message': message,
                              'files': {p: f.oid for p, f in sorted(files.items())}})
        commit = hashlib.sha1(listing.encode()).hexdigest()
        repo.commits[commit] = files
        return commit

    def add_release(self, name: str, data: bytes) -> str:
        """Serve ``data`` at a release-style URL (as GitHub serves timm's older checkpoints); return the URL."""
        self.releases[name] = data
        return f'{self.endpoint}/releases/{name}'

    async def release(self, request: Request) -> Response:
        data = self.releases.get(request.path_params['name'])
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type='application/octet-stream', headers={'Content-Length': str(len(data))})

    # ---- the app -------------------------------------------------------------------------------------------------
    def app(self) -> Starlette:
        routes = [
            Route('/api/repos/create', self.create_repo, methods=['POST']),
            Route('/api/validate-yaml', self.validate_yaml, methods=['POST']),
            Route('/api/models/{ns}/{name}/preupload/{rev}', self.preupload, methods=['POST']),
            Route('/api/models/{ns}/{name}/commit/{rev}', self.commit, methods=['POST']),
            Route('/api/models/{ns}/{name}/paths-info/{rev}', self.paths_info, methods=['POST']),
            Route('/api/models/{ns}/{name}/tree/{rev}', self.tree, methods=['GET']),
            Route('/api/models/{ns}/{name}/tree/{rev}/{path:path}', self.tree, methods=['GET']),
            Route('/api/models/{ns}/{name}/revision/{rev}', self.model_info, methods=['GET']),
            Route('/api/models/{ns}/{name}', self.model_info, methods=['GET']),
            Route('/{ns}/{name}.git/info/lfs/objects/batch', self.lfs_batch, methods=['POST']),
            Route('/lfs/{oid}', self.lfs_put, methods=['PUT']),
            Route('/lfs/{oid}/verify', self.lfs_verify, methods=['POST']),
            Route('/{ns}/{name}/resolve/{rev}/{path:path}', self.resolve, methods=['GET', 'HEAD']),
            Route('/releases/{name}', self.release, methods=['GET']),
        ]
        app = Starlette(routes=routes)
        server = self

        async def middleware(scope, receive, send):
            if scope['type'] != 'http':
                return await app(scope, receive, send)
            request = Request(scope, receive)
            server.requests.append((request.method, request.url.path))
            for fault in list(server._faults):
                response = fault(request)
                if response is not None:
                    return await response(scope, receive, send)
            return await app(scope, receive, send)

        return middleware

    async def create_repo(self, request: Request) -> Response:
        body = await request.json()
        repo_id = f'{body["organization"]}/{body["name"]}' if body.get('organization') else body['name']
        url = {'url': f'{self.endpoint}/{repo_id}'}
        with self._lock:
            if repo_id in self.repos:
                return JSONResponse(dict(url, error='You already created this model repo'), status_code=409)
            repo = Repo(private=bool(body.get('private')))
            repo.branches['main'] = self._commit(repo, None, {}, 'initial commit')
            self.repos[repo_id] = repo
        return JSONResponse(url)

    async def validate_yaml(self, request: Request) -> Response:
        await request.body()
        return JSONResponse({'errors': [], 'warnings': []})

    async def preupload(self, request: Request) -> Response:
        repo_id = f'{request.path_params["ns"]}/{request.path_params["name"]}'
        repo, commit, error = self._resolve(repo_id, request.path_params['rev'])
        if error:
            return error
        files = repo.commits[commit]
        out = []
        for f in (await request.json())['files']:
            lfs = f['path'].endswith(_LFS_SUFFIXES) or f['size'] > 10 * 2 ** 20
            entry = {'path': f['path'], 'uploadMode': 'lfs' if lfs else 'regular', 'shouldIgnore': False}
            if f['path'] in files:
                entry['oid'] = files[f['path']].oid
            out.append(entry)
        return JSONResponse({'files': out})

    async def lfs_batch(self, request: Request) -> Response:
        body = await request.json()
        objects = []
        for obj in body['objects']:
            out = {'oid': obj['oid'], 'size': obj['size']}
            if obj['oid'] not in self.lfs_objects:
                out['actions'] = {
                    'upload': {'href': f'{self.endpoint}/lfs/{obj["oid"]}', 'header': {}},
                    'verify': {'href': f'{self.endpoint}/lfs/{obj["oid"]}/verify'},
                }
            objects.append(out)
        return JSONResponse({'transfer': 'basic', 'objects': objects})

    async def lfs_put(self, request: Request) -> Response:
        oid = request.path_params['oid']
        data = await request.body()
        if hashlib.sha256(data).hexdigest() != oid:
            return JSONResponse({'error': 'sha256 does not match the oid'}, status_code=400)
        self.lfs_objects[oid] = data
        return Response(status_code=200)

    async def lfs_verify(self, request: Request) -> Response:
        body = await request.json()
        ok = body['oid'] in self.lfs_objects and len(self.lfs_objects[body['oid']]) == body['size']
        return JSONResponse({}, status_code=200 if ok else 404)

    async def commit(self, request: Request) -> Response:
        repo_id = f'{request.path_params["ns"]}/{request.path_params["name"]}'
        branch = unquote(request.path_params['rev'])
        repo, parent, error = self._resolve(repo_id, branch)
        if error:
            return error
        header, changes = {}, []
        for line in (await request.body()).decode().splitlines():
            if line.strip():
                item = json.loads(line)
                if item['key'] == 'header':
                    header = item['value']
                else:
                    changes.append(item)
        with self._lock:
            files = dict(repo.commits[repo.branches[branch]])
            for item in changes:
                value = item['value']
                if item['key'] == 'file':
                    files[value['path']] = StoredFile(base64.b64decode(value['content']), lfs=False)
                elif item['key'] == 'lfsFile':
                    if value['oid'] not in self.lfs_objects:
                        return JSONResponse({'error': f'LFS object {value["oid"]} was not uploaded'}, status_code=422)
                    files[value['path']] = StoredFile(self.lfs_objects[value['oid']], lfs=True)
                elif item['key'] == 'deletedFile':
                    files.pop(value['path'], None)
                else:
                    return JSONResponse({'error': f'unsupported commit operation {item["key"]}'}, status_code=400)
            commit = self._commit(repo, parent, files, header.get('summary', ''))
            repo.branches[branch] = commit
        return JSONResponse({'commitOid': commit, 'commitUrl': f'{self.endpoint}/{repo_id}/commit/{commit}'})

    async def model_info(self, request: Request) -> Response:
        repo_id = f'{request.path_params["ns"]}/{request.path_params["name"]}'
        repo, commit, error = self._resolve(repo_id, request.path_params.get('rev', 'main'))
        if error:
            return error
        return JSONResponse({
            'id': repo_id, 'modelId': repo_id, 'sha': commit, 'private': repo.private, 'library_name': 'timm',
            'tags': [], 'siblings': [{'rfilename': p} for p in sorted(repo.commits[commit])],
        })

    def _file_info(self, path: str, f: StoredFile) -> dict:
        info = {'type': 'file', 'path': path, 'oid': git_blob_sha1(f.data), 'size': len(f.data)}
        if f.lfs:
            info['lfs'] = {'oid': f.sha256, 'size': len(f.data), 'pointerSize': 134}
        return info

    async def tree(self, request: Request) -> Response:
        repo_id = f'{request.path_params["ns"]}/{request.path_params["name"]}'
        repo, commit, error = self._resolve(repo_id, request.path_params['rev'])
        if error:
            return error
        prefix = request.path_params.get('path', '').strip('/')
        files = repo.commits[commit]
        return JSONResponse([self._file_info(p, f) for p, f in sorted(files.items())
                             if not prefix or p.startswith(prefix + '/')])

    async def paths_info(self, request: Request) -> Response:
        repo_id = f'{request.path_params["ns"]}/{request.path_params["name"]}'
        repo, commit, error = self._resolve(repo_id, request.path_params['rev'])
        if error:
            return error
        paths = parse_qs((await request.body()).decode()).get('paths', [])
        files = repo.commits[commit]
        return JSONResponse([self._file_info(p, files[p]) for p in paths if p in files])

    async def resolve(self, request: Request) -> Response:
        repo_id = f'{request.path_params["ns"]}/{request.path_params["name"]}'
        repo, commit, error = self._resolve(repo_id, request.path_params['rev'])
        if error:
            return error
        path = request.path_params['path']
        stored = repo.commits[commit].get(path)
        if stored is None:
            return _error(404, 'EntryNotFound', f'{path} does not exist on "{request.path_params["rev"]}"')
        headers = {'X-Repo-Commit': commit, 'Accept-Ranges': 'bytes'}
        if stored.lfs:
            headers.update({'X-Linked-Etag': f'"{stored.sha256}"', 'X-Linked-Size': str(len(stored.data)),
                            'ETag': f'"{git_blob_sha1(stored.data)}"'})
        else:
            headers['ETag'] = f'"{git_blob_sha1(stored.data)}"'
        data = self._tampered.get((repo_id, path), stored.data)
        if request.method == 'HEAD':
            headers['Content-Length'] = str(len(data))
            return Response(status_code=200, headers=headers)
        status = 200
        match = re.match(r'bytes=(\d+)-(\d*)$', request.headers.get('range', ''))
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            headers['Content-Range'] = f'bytes {start}-{end}/{len(data)}'
            data, status = data[start:end + 1], 206
        if (repo_id, path) in self._truncated:
            data = data[:self._truncated[(repo_id, path)]]
        return Response(data, status_code=status, headers=headers, media_type='application/octet-stream')


def _error(status: int, code: str, message: str) -> Response:
    headers = {'X-Error-Code': code, 'X-Error-Message': message}
    return JSONResponse({'error': message}, status_code=status, headers=headers)


def reserve_socket() -> socket.socket:
    """A listening socket on a free port of 127.0.0.1, bound now so its address can go into HF_ENDPOINT early."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(('127.0.0.1', 0))
    sock.listen(128)
    return sock
