"""``/api/di/{staging,upload,publish}``: disk images with their files.

``staging`` and ``upload`` run ``di_create`` through the normal pipeline,
answer at once with the new id, and then (staging: in the background) put
the file in ``path.storage.images`` as ``<id>-<name>``: the DI goes
``uploading`` -> ``ready`` -> ``published``, or ``fail`` with the error code.
``publish`` publishes a ``ready`` DI; unlike QVD 4 it checks an ACL
(``di.create.`` or ``di.update.``).  The Disk Image Generator endpoints
(``generate``, ``download``, ``docker``, ``notify``) answer "not supported".
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Generator

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.web import resource, server

from qvd.api.dispatch import API, Answer
from qvd.api.errors import APIError, success
from qvd.api.ops import dis
from qvd.api.web import APIEndpoint, Refusal, peer_of, read_params, respond, _cookie

log = Logger()

PUBLISH_ACLS = (r"^di\.(create|update)\.",)


def _copy(source: str, images: str, name: str) -> None:
    os.makedirs(images, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=".copying-", dir=images)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        os.chmod(partial, 0o644)
        os.replace(partial, os.path.join(images, name))
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise


def _store(data: bytes, images: str, name: str) -> None:
    os.makedirs(images, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=".upload-", dir=images)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(partial, 0o644)
    os.replace(partial, os.path.join(images, name))


class _Endpoint(APIEndpoint):
    """A disk-image endpoint: creates the DI row, then works on its file."""

    @defer.inlineCallbacks
    def created(self, request: server.Request, params: dict[str, Any]) -> Generator[Any, Any, tuple]:
        """Run di_create; (answer, new id or None, file name)."""
        params["action"] = "di_create"
        answer = yield self.api.process(params, peer_of(request), _cookie(request))
        if answer.body.get("status") != 0:
            return answer, None, None
        di_id = answer.body["rows"][0]["id"]
        rows = yield self.api.database.run_query("SELECT path FROM dis WHERE id = %s", (di_id,))
        name = f"{di_id}-{os.path.basename(rows[0][0])}"
        yield self.api.database.run_operation("UPDATE dis SET path = %s WHERE id = %s",
                                              (name, di_id))
        return answer, di_id, name

    @defer.inlineCallbacks
    def finish(self, di_id: int, work: Any, failure_code: int) -> Generator[Any, Any, None]:
        """Run the file ``work`` (a Deferred): ready and published, or fail."""
        db = self.api.database
        yield db.run_interaction(lambda c: dis.set_state(c, di_id, "uploading"))
        try:
            yield work
        except Exception as e:
            log.warn("disk image {id} failed: {e}", id=di_id, e=e)
            code = e.code if isinstance(e, APIError) else failure_code
            message = str(e)
            yield db.run_interaction(lambda c: dis.set_state(c, di_id, "fail", message, code))
            return
        yield db.run_interaction(lambda c: dis.set_state(c, di_id, "ready"))
        yield db.run_interaction(lambda c: dis.publish(c, di_id))


class StagingResource(_Endpoint):
    """``/api/di/staging``: a DI from a file already in the staging directory."""

    @defer.inlineCallbacks
    def answer(self, request: server.Request) -> Any:
        params = read_params(request)
        answer, di_id, name = yield self.created(request, params)
        if di_id is None:
            return answer
        staging = self.api.config.get("path.storage.staging")
        images = self.api.config.get("path.storage.images")
        source = os.path.join(staging, os.path.basename(str(
            (params.get("arguments") or {}).get("disk_image", ""))))
        if not os.path.isdir(staging):
            copy = defer.fail(APIError(2230))
        elif not os.path.isfile(source):
            copy = defer.fail(APIError(2240))
        else:
            copy = threads.deferToThread(_copy, source, images, name)
        self.finish(di_id, copy, 2210).addErrback(
            lambda f: log.failure("staging copy failed", f))
        return answer


class UploadResource(_Endpoint):
    """``/api/di/upload``: a DI from the uploaded ``file``."""

    @defer.inlineCallbacks
    def answer(self, request: server.Request) -> Any:
        files = (request.args or {}).pop(b"file", None)
        params = read_params(request)
        if not files:
            raise APIError(2250)
        answer, di_id, name = yield self.created(request, params)
        if di_id is None:
            return answer
        images = self.api.config.get("path.storage.images")
        yield self.finish(di_id, threads.deferToThread(_store, files[-1], images, name), 2251)
        return answer

    def render_GET(self, request: server.Request) -> Any:
        return respond(request, lambda: defer.succeed(Answer(success())))


class PublishResource(_Endpoint):
    """``/api/di/publish``: publish a ready DI."""

    @defer.inlineCallbacks
    def answer(self, request: server.Request) -> Any:
        params = read_params(request)
        admin, _ = yield self.api.authenticate(params, peer_of(request), _cookie(request))
        permissions = yield self.api.acls.permissions(admin, self.api.sessions.multitenant())
        if not permissions.allows(PUBLISH_ACLS):
            raise APIError(4210, "di_publish")
        try:
            di_id = int(params.get("id"))
        except (TypeError, ValueError):
            raise APIError(6240, "id") from None
        rows = yield self.api.database.run_query(
            "SELECT CAST(r.state AS text), o.tenant_id FROM dis d JOIN osfs o"
            " ON o.id = d.osf_id LEFT JOIN di_runtimes r ON r.di_id = d.id WHERE d.id = %s",
            (di_id,))
        if not rows or (not admin.superadmin and rows[0][1] != admin.tenant_id):
            raise APIError(2290)
        if rows[0][0] != "ready":
            raise APIError(1100, info="only a ready disk image can be published")
        yield self.api.database.run_interaction(lambda c: dis.publish(c, di_id))
        return Answer(success())


class DiResource(resource.Resource):
    def __init__(self, api: API):
        super().__init__()
        self.putChild(b"staging", StagingResource(api))
        self.putChild(b"upload", UploadResource(api))
        self.putChild(b"publish", PublishResource(api))
        for name in (b"generate", b"download", b"docker", b"notify"):
            self.putChild(name, Refusal(f"/api/di/{name.decode()}"))

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        return Refusal(f"/api/di/{path.decode('utf-8', 'replace')}")
