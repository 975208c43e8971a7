"""The cloud service: features in the wire format in, every task's answer out.

FastAPI on uvicorn, onnxruntime for the classifier; no torch on this path. Every
malformed request gets a 4xx JSON body `{"error": code, "detail": message}`;
the service refuses to start on an incomplete or altered export folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import time
import zlib
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__, wire
from ..errors import UserError
from ..log import log
from ..threads import resolve_threads
from .batcher import Batcher
from .limits import (
    DEFAULT_BATCH_WAIT_MS,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_UPLOADS,
)
from .manifest import ExportError, load_export, privacy_digest
from .sessions import open_checked

TOKEN_ENV = "DEEPOBFUSCATOR_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


_BEARER = HTTPBearer(auto_error=False)  # module level: annotations are resolved in globals
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


class ApiError(StarletteHTTPException):
    def __init__(self, status: int, code: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, detail, headers)
        self.code = code


class Answer(BaseModel):
    """One task's answer for one image."""

    probability: float = Field(description="binary: P(yes); multi-class: the top class's "
                               "probability")
    label: int | None = Field(default=None, description="binary only: 1 if probability >= "
                              "the task's threshold, else 0")
    class_: str | None = Field(default=None, serialization_alias="class",
                               description="multi-class only: the most probable class")
    probabilities: dict[str, float] | None = Field(
        default=None, description="multi-class only: every class's probability (they sum to 1)")


class Prediction(BaseModel):
    probability: float | None = Field(default=None,
                                      description="one-task exports only: P(task = 1)")
    label: int | None = Field(default=None, description="one-task exports only: 1 if "
                              "probability >= threshold")
    answers: dict[str, Answer] = Field(description="every task's answer, by task name")


class ClassifyResponse(BaseModel):
    task: str | None = Field(default=None, description="one-task exports only: its name")
    threshold: float | None = Field(default=None, description="one-task exports only")
    tasks: list[str] = Field(description="every task's name, in the manifest's order")
    predictions: list[Prediction] = Field(description="one per image, in the batch's order")


def answers(tasks: list[dict], probs: np.ndarray) -> list[dict[str, Answer]]:
    """classifier.onnx's (N, outputs) probabilities -> per image, every task's answer."""
    out: list[dict[str, Answer]] = [{} for _ in range(len(probs))]
    for t in tasks:
        a, b = t["outputs"]
        if t["kind"] == "binary":
            threshold = float(t.get("threshold", 0.5))
            for row, p in zip(out, probs[:, a], strict=True):
                row[t["name"]] = Answer(probability=float(p), label=int(p >= threshold))
        else:
            top = probs[:, a:b].argmax(1)
            for row, ps, k in zip(out, probs[:, a:b], top, strict=True):
                row[t["name"]] = Answer(
                    probability=float(ps[k]), class_=t["classes"][k],
                    probabilities={c: float(v) for c, v in zip(t["classes"], ps, strict=True)})
    return out


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
                 405: "method_not_allowed", 413: "too_large", 415: "unsupported_encoding",
                 422: "invalid_request"}
_BODY_DOC = {"requestBody": {"required": True, "description": "a feature batch in the wire "
             "format (docs/deploy.md), optionally with `Content-Encoding: gzip`",
             "content": {"application/octet-stream": {
                 "schema": {"type": "string", "format": "binary"}}}}}


def create_app(export_dir: str | Path, token: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY, max_batch: int = DEFAULT_MAX_BATCH,
               threads: int = 0, manifest_sha256: str | None = None,
               attacker_view: str | Path | None = None,
               body_timeout: float = DEFAULT_BODY_TIMEOUT,
               max_uploads: int = DEFAULT_MAX_UPLOADS, api_docs: bool = False,
               batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS) -> FastAPI:
    """The service for one export folder. token=None reads $DEEPOBFUSCATOR_TOKEN (unset: no auth).

    Raises ExportError (before anything listens) if the folder is incomplete or altered, its
    manifest is malformed or is not the pinned one (manifest_sha256), or the classifier does
    not load or does not answer features of the manifest's shape.
    attacker_view: an audit folder of this export's run: also serve what its inverse networks
    rebuild from a wire body (deploy/attacker_view.py; off by default).
    body_timeout, max_uploads: a body that has not fully arrived within body_timeout
    seconds is answered 408; beyond max_uploads bodies being read at once, 503 at once.
    api_docs: serve the API's reference at /docs (rendered here, no outside assets).
    batch_wait_ms: concurrent requests' features run through the classifier as one batch
    (batcher.py), waiting up to this long for requests still arriving; below 0: each
    request runs alone.
    """
    if max_body_bytes < wire.HEADER_BYTES or max_batch < 1:
        raise UserError(f"max_body_bytes={max_body_bytes}, max_batch={max_batch}: a request "
                        f"must be allowed at least {wire.HEADER_BYTES} bytes and 1 image")
    if not (body_timeout > 0 and max_uploads >= 1):
        raise UserError(f"body_timeout={body_timeout}, max_uploads={max_uploads}: give a "
                        "timeout above 0 seconds and at least 1 upload at a time")
    bundle = load_export(export_dir, pin=manifest_sha256)
    if token is None and TOKEN_ENV in os.environ:
        token = os.environ[TOKEN_ENV]  # set but empty is refused below, as --token "" is
    if token is not None and not token.strip():
        # an empty token would match a request with no Authorization header at all
        raise UserError(f"empty bearer token (--token, --token-file or ${TOKEN_ENV}): give a "
                        f"non-empty token, or unset ${TOKEN_ENV} to serve without one")
    session = _load_classifier(bundle, threads)
    privacy = privacy_digest(bundle.manifest["features"])
    public = dict(bundle.manifest)
    public["run"] = {k: v for k, v in public.get("run", {}).items()
                     if k not in ("path", "config_file")}  # no server file paths in answers

    tasks, names = bundle.tasks, bundle.task_names
    uploads = _Uploads()

    def classifier(z: np.ndarray) -> np.ndarray:
        return session.run(None, {"features": z})[0]

    batcher = Batcher(classifier, max_batch, batch_wait_ms) if batch_wait_ms >= 0 else None
    # no /docs or /redoc from FastAPI: they load Swagger UI and fonts from outside this
    # server; api_docs renders the reference here instead (api_docs.py)
    app = FastAPI(title="DeepObfuscator cloud classifier", version=__version__,
                  docs_url=None, redoc_url=None,
                  description=f"Answers {', '.join(f'`{n}`' for n in names)} from obfuscated "
                  "features. The device runs obfuscator.onnx and sends its output in the wire "
                  "format; each prediction's `answers` holds every task's answer (binary: "
                  "probability and label; multi-class: class, probability and every class's "
                  "probabilities).")
    # compare fixed-length digests in constant time: no timing oracle on the content or the
    # length of the token
    token_digest = hashlib.sha256(token.encode()).digest() if token is not None else b""

    def authorize(creds: Credentials) -> None:
        if token is None:
            return
        given = creds.credentials.encode() if creds is not None else b""
        if not hmac.compare_digest(hashlib.sha256(given).digest(), token_digest):
            raise ApiError(401, "unauthorized", "missing or wrong bearer token: send "
                           "'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", _STATUS_CODES.get(exc.status_code, "error"))
        return JSONResponse({"error": code, "detail": exc.detail}, exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "invalid_request", "detail": str(exc.errors())}, 422)

    @app.get("/healthz")
    async def healthz() -> dict:
        # `task` (one-task exports) as before; `tasks` names every task of any export
        return {"status": "ok", **({"task": names[0]} if bundle.single else {}),
                "tasks": names, "version": __version__,
                "classifier_sha256": bundle.manifest["models"]["classifier"]["sha256"],
                # what the classifier was exported with: a client whose manifest differs
                # (its noise edited away, say) stops before it sends anything
                "privacy_sha256": privacy}

    @app.get("/v1/manifest", dependencies=[Depends(authorize)])
    async def manifest() -> dict:
        return public

    # exclude_none: a one-task answer keeps exactly today's fields (plus `tasks` and
    # `answers`), a multi-task one has no `task`/`probability` to misread
    @app.post("/v1/classify", response_model=ClassifyResponse, openapi_extra=_BODY_DOC,
              dependencies=[Depends(authorize)], response_model_exclude_none=True,
              summary="every task's answer for a batch of obfuscated features",
              responses={400: {"description": "malformed feature batch"},
                         401: {"description": "missing or wrong token"},
                         413: {"description": "body or batch too large"},
                         415: {"description": "a Content-Encoding other than gzip"}})
    async def classify(request: Request, response: Response) -> ClassifyResponse:
        if uploads.reading >= max_uploads:
            raise ApiError(503, "busy", f"{max_uploads} uploads are arriving already; retry "
                           "in a moment", {"Retry-After": "1"})
        t0 = time.perf_counter()
        with batcher.arriving_one() if batcher else contextlib.nullcontext():
            uploads.reading += 1  # one event loop: no lock needed
            try:
                body = await _read_limited(request, max_body_bytes, body_timeout)
            finally:
                uploads.reading -= 1
            encoding = request.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("gzip", "x-gzip", "identity", ""):
                raise ApiError(415, "unsupported_encoding", f"Content-Encoding {encoding!r} is "
                               "not supported: send gzip or no Content-Encoding")
            t1 = time.perf_counter()
            # off the event loop: inflating and decoding a batch takes milliseconds, and
            # /healthz must not wait for them
            z = await run_in_threadpool(_features, body, encoding in ("gzip", "x-gzip"),
                                        bundle.feature_shape, max_body_bytes, max_batch)
        t2 = time.perf_counter()
        if batcher is not None:  # gathered with other requests' features into one run
            probs, queued, model = await batcher.submit(z)
        else:
            probs = (await run_in_threadpool(classifier, z))
            queued, model = 0.0, time.perf_counter() - t2
        # where the time went (ms), for load tests and for a proxy's logs
        response.headers["Server-Timing"] = ", ".join(
            f"{k};dur={v * 1e3:.2f}" for k, v in (("read", t1 - t0), ("decode", t2 - t1),
                                                  ("queue", queued), ("model", model)))
        probs = np.asarray(probs, np.float64).reshape(len(z), -1)  # (N, outputs)
        if not np.isfinite(probs).all():  # extreme inputs can overflow inside the network
            raise ApiError(422, "non_finite_output", "the classifier's output is not finite "
                           "for these features: they are far outside what the model was "
                           "trained on")
        rows = answers(tasks, probs)
        if not bundle.single:
            return ClassifyResponse(tasks=names, predictions=[
                Prediction(answers=row) for row in rows])
        one = names[0]
        return ClassifyResponse(task=one, threshold=bundle.threshold, tasks=names, predictions=[
            Prediction(probability=row[one].probability, label=row[one].label, answers=row)
            for row in rows])

    @app.get("/v1/obfuscator.onnx", dependencies=[Depends(authorize)],
             response_class=FileResponse)
    async def obfuscator_model() -> FileResponse:
        """The device's model, for the page to run in the browser (it ships in every app
        anyway; behind the token like the rest of the API)."""
        return FileResponse(bundle.model_path("obfuscator"),
                            media_type="application/octet-stream")

    @app.get("/v1/face/{net}.onnx", dependencies=[Depends(authorize)],
             response_class=FileResponse, include_in_schema=False)
    async def face_model(net: str) -> FileResponse:
        """The face detector's graphs of an export that aligns (input.alignment), for the
        page to find and align the face on the device."""
        graphs = (bundle.preprocessing.get("alignment") or {}).get("graphs", {})
        if net not in graphs:
            raise ApiError(404, "not_found", "this export does not align faces, or has no "
                           f"detector graph {net!r}")
        return FileResponse(bundle.model_path(graphs[net]),
                            media_type="application/octet-stream")

    view = None
    if attacker_view is not None:
        from .attacker_view import AttackerView

        view = AttackerView(attacker_view, bundle)

    @app.get("/v1/attacker-view", dependencies=[Depends(authorize)])
    async def attacker_view_info() -> dict:
        if view is None:
            raise ApiError(404, "not_enabled", "the attacker view is off: start the server "
                           "with --attacker-view AUDIT_DIR to show it")
        return {"enabled": True, "baseline": {k: view.baseline_manifest[k]
                                              for k in ("features", "wire", "budget")}}

    @app.get("/v1/attacker-view/baseline.onnx", dependencies=[Depends(authorize)])
    async def attacker_view_baseline() -> Response:
        if view is None:
            raise ApiError(404, "not_enabled", "the attacker view is off")
        return Response(view.baseline_model, media_type="application/octet-stream")

    @app.post("/v1/attacker-view/{run}", dependencies=[Depends(authorize)],
              response_class=Response)
    async def attacker_view_image(run: str, request: Request) -> Response:
        if view is None:
            raise ApiError(404, "not_enabled", "the attacker view is off")
        if run not in ("obfuscated", "baseline"):
            raise ApiError(404, "unknown_run", "use /v1/attacker-view/obfuscated or /baseline")
        body = await _read_limited(request, max_body_bytes)
        gz = request.headers.get("content-encoding", "").strip().lower() in ("gzip", "x-gzip")
        z = await run_in_threadpool(_features, body, gz, view.feature_shape(run),
                                    max_body_bytes, 1)
        png = await run_in_threadpool(view.reconstruct_png, run, z)
        return Response(png, media_type="image/png")

    _mount_page(app)
    if api_docs:
        from .api_docs import mount_api_docs

        mount_api_docs(app, PAGE_HEADERS)
    app.state.view = view
    app.state.bundle = bundle
    app.state.batcher = batcher
    app.state.auth = token is not None
    return app


# the page runs only its own scripts (and onnxruntime-web's WebAssembly), talks only to
# this server, and may not be framed by another site (clickjacking); issue 37, item 4
PAGE_CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
            "connect-src 'self' data: blob:; worker-src 'self' blob:; media-src 'self' blob:; "
            "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP, "X-Frame-Options": "DENY",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _mount_page(app: FastAPI) -> None:
    """The page at / and its assets at /static: the browser runs the obfuscator itself
    (onnxruntime-web from deploy/web/vendor, fetched at set-up) and sends only features."""
    from fastapi.staticfiles import StaticFiles

    from .web_assets import WEB, installed

    index = (WEB / "index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(index, headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=WEB), name="static")
    app.state.page_assets = installed()


def _load_classifier(bundle, threads: int):
    """The cloud model, checked against the manifest (sessions.open_checked) and tried once
    on zeros of the manifest's feature shape. The obfuscator the page downloads is checked
    too: a manifest edited away from it is refused before anything listens."""
    open_checked(bundle, "obfuscator", 1)
    session = open_checked(bundle, "classifier", threads)
    path = bundle.model_path("classifier")
    shape = bundle.feature_shape
    try:
        out = session.run(None, {"features": np.zeros((2, *shape), np.float32)})[0]
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ExportError(f"{path} does not take features of the manifest's shape {list(shape)} "
                          f"({type(exc).__name__}: {first}); the manifest does not belong to "
                          "this model: export the run again") from None
    shape = np.asarray(out).shape
    ok = shape in ((2,), (2, 1)) if bundle.single else shape == (2, bundle.outputs)
    if not ok:
        want = [2] if bundle.single else [2, bundle.outputs]
        raise ExportError(f"{path} answers shape {list(shape)} for 2 feature tensors, not "
                          f"{want} as the manifest's task(s) say; export the run again")
    return session


class _Uploads:
    """How many request bodies are being read now."""

    reading = 0


async def _read_limited(request: Request, limit: int,
                        timeout: float = DEFAULT_BODY_TIMEOUT) -> bytes:
    """The request body, refusing (413) as soon as it is known to exceed `limit` bytes, and
    (408) once it has taken more than `timeout` seconds: a client that trickles its body
    (slowloris) holds a slot for that long at most."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_content_length", f"Content-Length {declared!r} is invalid")
        if int(declared) > limit:
            raise ApiError(413, "too_large", f"body of {declared} bytes > limit {limit}; "
                           "send fewer images per request")
    from starlette.requests import ClientDisconnect

    buf = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                buf += chunk
                if len(buf) > limit:
                    raise ApiError(413, "too_large", f"body exceeds limit {limit} bytes")
    except TimeoutError:
        log.info(f"client {request.client.host if request.client else '?'} sent {len(buf)} "
                 f"bytes of the body in {timeout:g} s: answered 408")
        raise ApiError(408, "body_timeout", f"the body did not arrive within {timeout:g} s; "
                       "send it at once", {"Connection": "close"}) from None
    except ClientDisconnect:
        # one line, not uvicorn's 60-line traceback: anyone could flood the log (issue 37)
        log.info(f"client {request.client.host if request.client else '?'} disconnected "
                 f"after {len(buf)} bytes of the body")
        raise ApiError(400, "client_disconnected", "the client left before sending the whole "
                       "body") from None
    return bytes(buf)


def _checked_header(prefix: bytes, shape: tuple[int, ...], limit: int,
                    max_batch: int) -> wire.Header:
    """The body's declared batch and size, refused before the rest is inflated or decoded."""
    try:
        head = wire.read_header(prefix, expected_shape=shape)
    except wire.WireError as exc:
        raise ApiError(400, exc.code, str(exc)) from exc
    n = head.shape[0]
    if n > max_batch:
        raise ApiError(413, "batch_too_large",
                       f"batch of {n} feature tensors > limit {max_batch}; split it")
    if head.total_bytes > limit:
        raise ApiError(413, "too_large", f"a batch of {n} needs {head.total_bytes} bytes > "
                       f"limit {limit}; send fewer images per request")
    return head


def _features(body: bytes, gzipped: bool, shape: tuple[int, ...], limit: int,
              max_batch: int) -> np.ndarray:
    """A request body -> float32 features, checking the declared batch and size from the
    header first: a small gzip body cannot inflate into a huge batch."""
    if gzipped:
        body = gunzip_limited(body, limit, lambda prefix: _checked_header(
            prefix, shape, limit, max_batch).total_bytes)
    else:
        _checked_header(body[:wire.HEADER_BYTES], shape, limit, max_batch)
    try:
        return wire.decode(body, expected_shape=shape, max_bytes=limit)
    except wire.WireError as exc:
        raise ApiError(413 if exc.code == "too_large" else 400, exc.code, str(exc)) from exc


def gunzip_limited(data: bytes, limit: int, size_from_header=None) -> bytes:
    """A gzip body, inflated to at most `limit` bytes: a small bomb cannot become a big body.

    size_from_header(prefix) -> bytes: given the first wire.HEADER_BYTES inflated bytes,
    the body's declared size (or an ApiError); the rest is inflated only up to it.
    """
    d = zlib.decompressobj(wbits=31)  # gzip header and trailer, CRC checked
    declared = None
    try:
        out = b""
        if size_from_header is not None:
            out = d.decompress(data, wire.HEADER_BYTES)
            rest = d.unconsumed_tail
            while len(out) < wire.HEADER_BYTES and rest:
                out += d.decompress(rest, wire.HEADER_BYTES - len(out))
                rest = d.unconsumed_tail
            declared = size_from_header(out)
            limit, data = min(limit, declared), rest
        out += d.decompress(data, max(1, limit + 1 - len(out)))  # 0 would mean "no limit"
    except zlib.error as exc:
        raise ApiError(400, "bad_encoding", f"body is not valid gzip ({exc})") from exc
    if d.eof and d.unused_data:  # (with max_length, zlib also leaves it in unconsumed_tail)
        raise ApiError(400, "bad_encoding", "bytes after the end of the gzip stream")
    if len(out) > limit or (d.unconsumed_tail and not d.eof):
        if declared is not None and limit == declared:
            raise ApiError(400, "length_mismatch", f"gzip body inflates beyond the {declared} "
                           "bytes its header declares")
        raise ApiError(413, "too_large", f"gzip body inflates beyond the limit of {limit} "
                       "bytes; send fewer images per request")
    if not d.eof:
        raise ApiError(400, "bad_encoding", "gzip body is truncated")
    if d.unused_data:
        raise ApiError(400, "bad_encoding", "bytes after the end of the gzip stream")
    return out


# `serve --workers N`: each worker process builds its own app from these settings (the
# token travels in TOKEN_ENV, never on a command line)
SETTINGS_ENV = "DEEPOBFUSCATOR_SERVE_SETTINGS"


def app_from_env() -> FastAPI:
    """The app of one worker process of `serve --workers N` (uvicorn's factory)."""
    return create_app(**json.loads(os.environ[SETTINGS_ENV]))


def serve(export_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
          token: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY,
          threads: int = 0, log_level: str = "info",
          manifest_sha256: str | None = None,
          attacker_view: str | Path | None = None,
          body_timeout: float = DEFAULT_BODY_TIMEOUT, max_uploads: int = DEFAULT_MAX_UPLOADS,
          max_connections: int = DEFAULT_MAX_CONNECTIONS, api_docs: bool = False,
          batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS, workers: int = 1) -> None:
    """Run the service on uvicorn until interrupted; workers > 1: that many processes share
    the port, each with its own classifier and batcher (onnxruntime threads: `threads`
    each, 0 = the free cores divided among them)."""
    import uvicorn

    if max_connections < 1 or workers < 1:
        raise UserError(f"max_connections={max_connections}, workers={workers}: allow at least "
                        "1 connection and 1 worker")
    if workers > 1 and threads == 0:
        threads = max(1, resolve_threads(0) // workers)
    settings: dict[str, Any] = dict(
        export_dir=str(export_dir), max_body_bytes=max_body_bytes, threads=threads,
        manifest_sha256=manifest_sha256,
        attacker_view=None if attacker_view is None else str(attacker_view),
        body_timeout=body_timeout, max_uploads=max_uploads, api_docs=api_docs,
        batch_wait_ms=batch_wait_ms)
    # built here first, also with workers: a broken export fails in one line before any
    # process starts
    app = create_app(token=token, **settings)
    if not app.state.auth and host not in LOOPBACK:
        log.warning(f"serving on {host} without a token; set --token or ${TOKEN_ENV}")
    log.info(f"serving {app.state.bundle.task} from {export_dir} on http://{host}:{port} "
             f"(the page: /, API docs: {'/docs' if api_docs else 'off (--api-docs)'}, auth: "
             f"{'bearer token' if app.state.auth else 'none'}"
             f"{f', {workers} worker processes' if workers > 1 else ''})")
    if not app.state.page_assets:
        log.warning("the page's onnxruntime-web is not installed, so / cannot run the "
                    "obfuscator: `python -m deepobfuscator.deploy.web_assets` (needs npm) "
                    "fetches it")
    # limit_concurrency: beyond it uvicorn answers 503 (connections that trickle their
    # headers hold one each; a reverse proxy in front is still the cure for those)
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level=log_level,
                    limit_concurrency=max_connections)
        return
    os.environ[SETTINGS_ENV] = json.dumps(settings)
    if token is not None:
        os.environ[TOKEN_ENV] = token  # the workers' environment, not their command line
    uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=workers, host=host,
                port=port, log_level=log_level, limit_concurrency=max_connections)
