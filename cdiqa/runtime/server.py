"""HTTP service over the runtime: ``iqa-export serve BUNDLE`` (Starlette + uvicorn).

Endpoints (OpenAPI at ``GET /openapi.json``, see ``server_openapi``; docs/serving.md)::

    POST /v1/score         multipart/form-data: files ref, dist; optional domain (field/query)
    POST /v1/score/batch   multipart/form-data: ref and dist repeated, paired in order
    GET  /healthz          liveness            GET /readyz   model loaded and warm
    GET  /metrics          Prometheus          GET /openapi.json

A scoring request::

    body (<= max_body: 413; in by the deadline: 408) ─► multipart (else 415/400)
      ─► every image's header, in a worker thread (400 bad bytes, 413 over max_pixels)
      ─► admission: the request's decoded pixels into the in-flight pixel budget
         (503 + Retry-After while it is full, 413 if it could never fit)
      ─► decode ─► StreamScorer.submit(block=False, deadline) of the domain
      (422 sizes differ / too small; 503 + Retry-After when the queue is full)
      ─► await the future until the request's deadline (504) ─► {"score", "domain", "id"}

Memory follows the budget, not the input: images are checked from their headers before
decoding (``cdiqa.images``), the pixels decoded at once are bounded by ``max_inflight_pixels``
(``server_budget``), and images larger than ``tile`` (512 by default) are scored in tiles,
so the network's activations follow the tile. A request that times out (504) abandons its
work: queued pairs are dropped and a tiled pair stops between tile batches.

Pairs of concurrent requests meet in the domain's ``StreamScorer`` and run as one micro-batch
(at most ``max_batch`` pairs, waiting at most ``max_wait`` for more). Every error is JSON
``{"error": {"code", "message", "field"}}`` and the server keeps serving. Shutdown (SIGTERM,
SIGINT): uvicorn stops accepting connections and waits for the requests in flight; then every
stream drains before the session closes, so an accepted request is answered.

A pair the scorer rejects inside a micro-batch fails only its own request (the stream scores
the batch's pairs again one by one). ``X-Request-Id`` is echoed only when it is 1-128
characters of ``[A-Za-z0-9._:-]`` (see ``request_id_from``). uvicorn runs h11 with the
config's keep-alive timeout, connection cap and header size limit (``uvicorn_config``).

Starlette, uvicorn, python-multipart and prometheus-client are imported when an app is built
(``cdiqa[serve]``); importing this module needs numpy only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import numpy as np

from cdiqa import _lazy
from cdiqa.errors import (Abandoned, CdiqaError, ConfigError, ImageDecodeError, ImageError,
                          ImageTooLarge, describe)
from cdiqa.images import MAX_PIXELS, check_pixels, image_header, load_image_bytes
from cdiqa.masking import MIN_SIZE

log = logging.getLogger("cdiqa.server")

#: image formats the server decodes (Pillow's names; MPO: phone cameras' multi-frame JPEG,
#: scored by its first frame)
FORMATS = ("PNG", "JPEG", "MPO", "TIFF")
EXPECTED_IMAGE = "a PNG, JPEG or TIFF file"
_FIELDS = ("ref", "dist", "domain")


@dataclass(frozen=True)
class ServeConfig:
    """Options of the HTTP server.

    Attributes:
        host: interface to bind; loopback unless told otherwise.
        port: TCP port; 0 picks a free one (printed at start).
        domain: default domain of requests that name none; None: the bundle's default.
        backend, device, threads: the runtime session (``Scorer.load``).
        max_batch: most pairs per inference call (1 turns micro-batching off).
        max_wait: seconds a micro-batch waits for more pairs once it has one.
        max_queue: pairs that may wait per domain; more get 503 with Retry-After.
        timeout: seconds from a request's arrival to its answer; later: 504.
        max_body: largest request body in bytes (413 above).
        max_pixels: largest image in pixels (413 above), checked from the header before
            decoding; the shared default ``cdiqa.images.MAX_PIXELS`` (64 MP).
        max_inflight_pixels: decoded pixels of all admitted requests together (images
            being decoded, queued or scored); a request that does not fit now gets 503 with
            Retry-After, one that could never fit 413. None: 2 x ``max_pixels`` (one pair of
            the largest images; about 1.5 GB as float32 at the default).
        tile: images with a side over ``tile`` + 2 x halo are scored in tiles of this
            interior size (a multiple of 32), so inference memory follows the tile, not the
            image; None: never tile.
        max_pairs: most pairs in one batch request.
        retry_after: seconds advised in Retry-After of 503 answers.
        access_log: uvicorn's per-request log lines.
        decode_threads: threads decoding images; None: min(4, CPU count). Few on purpose:
            dozens of threads (Starlette's default pool) contending for the GIL starve the
            event loop and stretch tail latency under load.
        keep_alive: seconds an idle keep-alive connection stays open (uvicorn's
            ``timeout_keep_alive``).
        max_concurrency: when open connections, or requests in progress, reach it uvicorn
            answers new requests 503 at once (``limit_concurrency``); None: no limit.
        max_header: most bytes of a request head (request line plus headers) buffered
            while incomplete (h11's ``max_incomplete_event_size``); past it uvicorn answers
            400 and closes. It bounds memory: a head that arrives whole may be larger.

    The body must arrive within ``timeout`` of the request's start (408 otherwise), so a
    client that sends slowly holds a connection for at most that long.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    domain: str | None = None
    backend: str = "auto"
    device: str | None = None
    threads: int | None = None
    max_batch: int = 8
    max_wait: float = 0.005
    max_queue: int = 64
    timeout: float = 30.0
    max_body: int = 32 << 20
    max_pixels: int = MAX_PIXELS
    max_inflight_pixels: int | None = None
    tile: int | None = 512
    max_pairs: int = 32
    retry_after: int = 1
    access_log: bool = False
    decode_threads: int | None = None
    keep_alive: float = 5.0
    max_concurrency: int | None = 128
    max_header: int = 16 << 10

    def check(self) -> None:
        """Raise ``ConfigError`` naming the first option that is out of range or not a number
        (NaN and inf included: ``max_wait=inf`` would stop the batcher's thread)."""
        from cdiqa.runtime.stream import MAX_SECONDS, check_option

        def number(name: str, **limits) -> None:
            value = getattr(self, name)
            if value is None and limits.pop("optional", False):
                return
            limits.pop("optional", None)
            flag = _SERVE_FLAGS.get(name)
            check_option("server", name, value, **limits,
                         fix=f"Fix ServeConfig.{name}" + (f" (iqa-export serve {flag})"
                                                          if flag else ""))

        number("port", integer=True, high=65535)
        for name in ("max_batch", "max_queue", "max_body", "max_pixels", "max_pairs",
                     "max_header"):
            number(name, integer=True, low=1)
        for name in ("threads", "decode_threads", "max_concurrency", "max_inflight_pixels"):
            number(name, integer=True, low=1, optional=True)
        number("retry_after", integer=True)
        for name in ("timeout", "keep_alive"):
            number(name, low_open=True, high=MAX_SECONDS)
        number("max_wait", high=MAX_SECONDS)
        number("tile", integer=True, low=32, optional=True)
        if self.tile is not None:
            from cdiqa.runtime.tiling import check_tiling

            check_tiling(self.tile, 0)
        if self.max_batch > 1 and self.max_wait >= self.timeout:
            raise ConfigError(describe(
                "Option", "server", "max_wait", f"{self.max_wait} s",
                f"less than timeout ({self.timeout} s)", "A lone request would wait out its "
                "timeout in the batcher: lower --max-wait-ms or raise --timeout"))

    @property
    def inflight_pixels(self) -> int:
        """``max_inflight_pixels``, or its default (2 x ``max_pixels``): resolved here only."""
        return (2 * self.max_pixels if self.max_inflight_pixels is None
                else self.max_inflight_pixels)


#: the ``iqa-export serve`` flag of a ServeConfig field, for messages
_SERVE_FLAGS = {"port": "--port", "threads": "--threads", "max_batch": "--max-batch",
                "max_wait": "--max-wait-ms", "max_queue": "--max-queue",
                "timeout": "--timeout", "max_body": "--max-body-mb",
                "max_pixels": "--max-pixels", "max_inflight_pixels": "--max-inflight-pixels",
                "tile": "--tile"}

#: request ids echoed as sent; any other X-Request-Id is replaced by a fresh one
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_from(header: str | None) -> str:
    """The id of a request: its ``X-Request-Id`` with surrounding whitespace stripped, if
    that is 1-128 characters of ``[A-Za-z0-9._:-]``, else a fresh uuid4 hex (32 characters).

    Replaced, not truncated or escaped: the id goes back out as a response header, and a cut
    that leaves trailing whitespace (or any control character) is a header h11 refuses to
    send, so the client got an empty reply.

    >>> request_id_from(" abc-1 ")
    'abc-1'
    >>> len(request_id_from("a b"))
    32
    """
    value = (header or "").strip()
    return value if REQUEST_ID.fullmatch(value) else uuid.uuid4().hex


class ApiError(Exception):
    """An HTTP error answered as ``{"error": {"code", "message", "field"}}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field, self.headers = field, headers or {}

    def body(self) -> dict:
        """The JSON body."""
        error = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


# ---- the service: scorer, one stream per domain, readiness ----


class Service:
    """What the app's endpoints share: the scorer, streams per domain, metrics, readiness.

    Args:
        source: a loaded ``Scorer`` (kept open at shutdown), or a callable that loads one
            (called at start-up in a thread; its scorer is closed at shutdown).
        config: server options.
    """

    def __init__(self, source, config: ServeConfig) -> None:
        from cdiqa.runtime.server_metrics import Metrics

        self.config = config
        self.metrics = Metrics()
        self._source = source
        self._owned = not hasattr(source, "score_pairs")
        self.scorer = None if self._owned else source
        self._streams: dict = {}
        self._lock = threading.Lock()
        import os
        from concurrent.futures import ThreadPoolExecutor

        from cdiqa.runtime.server_budget import PixelBudget

        self.pixels = PixelBudget(config.inflight_pixels)
        self.default_domain = config.domain  # resolved in start() when None
        self.executor = ThreadPoolExecutor(config.decode_threads or min(4, os.cpu_count() or 1),
                                           thread_name_prefix="cdiqa-decode")
        self.ready = threading.Event()
        self.failure: str | None = None
        self.closing = False
        self.drained = True

    def start(self) -> None:
        """Load (if given a loader), then warm up: score one pair of the smallest size."""
        try:
            if self.scorer is None:
                self.scorer = self._source()
            self.default_domain = self.config.domain or self.scorer.domain
            self.check_domain(self.default_domain, "domain")
            size = self.scorer.manifest.preprocessing.min_size
            zeros = np.zeros((size, size, 3), np.float32)
            self.stream(self.default_domain).submit(zeros, zeros).result()
        except Exception as exc:  # reported by /readyz; the process stays up for diagnosis
            self.failure = f"{type(exc).__name__}: {exc}"
            log.error("cdiqa server failed to start: %s", self.failure)
            return
        self.ready.set()
        self.metrics.ready.set(1)

    def check_domain(self, domain: str, field: str) -> None:
        """Raise ``ApiError`` 400 unless the bundle has ``domain``.

        The message names the domains, not the bundle (the manifest's own message holds the
        bundle's path on this machine, which clients have no business seeing).
        """
        import difflib

        domains = sorted(self.scorer.manifest.domains)
        if domain in domains:
            return
        near = difflib.get_close_matches(domain, domains, n=1)
        raise ApiError(400, "unknown_domain", describe(
            "Domain", "request", field, repr(domain), f"one of {domains}",
            f"Did you mean '{near[0]}'?" if near else "Use one of them"), field)

    def stream(self, domain: str, large: bool = False):
        """The ``StreamScorer`` of ``domain`` (created on first use; the session is shared).

        ``large``: the stream of pairs scored in tiles, one pair at a time on a worker of
        its own, so that a large pair (up to ``timeout`` seconds of tiles) does not hold up
        the micro-batches of small pairs behind it.
        """
        from cdiqa.runtime.server_metrics import ObservedScorer
        from cdiqa.runtime.stream import StreamScorer

        with self._lock:
            if (domain, large) not in self._streams:
                scorer = (self.scorer if domain == self.scorer.domain
                          else self.scorer.with_domain(domain))
                self._streams[(domain, large)] = StreamScorer(
                    ObservedScorer(scorer, self.metrics),
                    max_batch=1 if large else self.config.max_batch,
                    max_wait=self.config.max_wait, max_queue=self.config.max_queue)
            return self._streams[(domain, large)]

    def submit(self, domain: str, ref: np.ndarray, dist: np.ndarray, field: str = "",
               deadline: float | None = None):
        """Queue one decoded pair, abandoned after ``deadline`` (monotonic); a
        ``concurrent.futures.Future`` of its score."""
        from cdiqa.runtime.stream import QueueFull, StreamClosed

        try:
            large = self.scorer.tiled(ref.shape[:2])
            future = self.stream(domain, large).submit(ref, dist, block=False,
                                                       deadline=deadline)
        except QueueFull:
            raise ApiError(503, "queue_full", describe(
                "Queue", "server", domain, f"{self.config.max_queue} pairs waiting",
                "a free slot", f"Retry after {self.config.retry_after} s or lower the load"),
                headers={"Retry-After": str(self.config.retry_after)}) from None
        except StreamClosed:
            raise _shutting_down(self.config) from None
        except ImageError as exc:
            raise _image_error(exc, ref, dist, field) from None
        self.metrics.queue_depth.inc()
        future.add_done_callback(lambda _: self.metrics.queue_depth.dec())
        return future

    def close(self) -> bool:
        """Refuse new pairs, finish every accepted one, close an owned scorer.

        The streams get ``timeout`` seconds to drain (every request waiting on them has had
        its answer by then). A stream still busy after that (a hung inference call) is left
        to its daemon thread and the session is left open rather than closed under it.

        Returns:
            True if every stream drained.
        """
        self.closing = True
        self.ready.clear()
        self.metrics.ready.set(0)
        with self._lock:
            streams, self._streams = list(self._streams.values()), {}
        deadline = time.monotonic() + self.config.timeout
        drained = all([stream.close(max(0.0, deadline - time.monotonic()))
                       for stream in streams])
        self.executor.shutdown(wait=drained)
        if not drained:
            log.warning("cdiqa server: a stream was still scoring %s s after shutdown began; "
                        "leaving it and its session", self.config.timeout)
        elif self._owned and self.scorer is not None:
            self.scorer.close()
        self.drained = drained
        return drained


def _shutting_down(config: ServeConfig) -> ApiError:
    return ApiError(503, "shutting_down", "Server for requests 'new': got one during shutdown, "
                    "expected none. Retry on another instance.",
                    headers={"Retry-After": str(config.retry_after)})


def _image_error(exc: ImageError, ref: np.ndarray, dist: np.ndarray, field: str) -> ApiError:
    """422 with a code that says which check failed (the runtime's message names the image)."""
    suffix = field and f"[{field}]"
    if ref.shape[:2] != dist.shape[:2]:
        return ApiError(422, "size_mismatch", str(exc), f"dist{suffix}")
    if min(ref.shape[:2]) < MIN_SIZE:
        return ApiError(422, "image_too_small", str(exc), f"ref{suffix}")
    return ApiError(422, "unprocessable_image", str(exc), None)


# ---- request parsing ----


async def read_body(request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes (413) before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"more than {size}", limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size, limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", describe(
        "Body size", "request", "body", f"{size} bytes", f"at most {limit} bytes",
        "Send smaller images or raise the server's --max-body"))


async def read_form(request, config: ServeConfig, max_files: int,
                    deadline: float | None = None):
    """The multipart form of ``request`` (415 for another content type, 400 if malformed,
    408 if the body is not in by ``deadline``)."""
    from starlette.requests import Request

    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type", describe(
            "Content type", "request", "body", repr(ctype or "none"), "multipart/form-data",
            "Send the images as form files 'ref' and 'dist' (curl -F ref=@a.png -F "
            "dist=@b.png)"), "content-type")
    try:  # a slow sender holds its connection until the request's deadline, not forever
        body = await asyncio.wait_for(read_body(request, config.max_body),
                                      None if deadline is None
                                      else max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        raise ApiError(408, "body_timeout", describe(
            "Duration", "request", "body", f"over {config.timeout} s to arrive",
            f"the whole body within {config.timeout} s", "Send the body at once, send "
            "smaller images, or raise the server's --timeout")) from None
    replay = Request(request.scope, receive=_replay(body))
    try:
        return await replay.form(max_files=max_files, max_fields=len(_FIELDS) + max_files)
    except Exception as exc:  # python-multipart / Starlette raise several types for bad bodies
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or exc
        raise ApiError(400, "invalid_body", describe(
            "Multipart body", "request", "body", str(detail), "a valid multipart/form-data body",
            "Send the images as form files 'ref' and 'dist'")) from None


def _replay(body: bytes):
    """An ASGI ``receive`` that hands over an already read body once."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def form_files(form, name: str, many: bool, max_pairs: int) -> list:
    """The uploaded files of field ``name`` (400 if missing, not files, or too many)."""
    items = form.getlist(name)
    if not items:
        raise ApiError(400, "missing_field", describe(
            "Field", "form", name, "nothing", "an image file (PNG, JPEG or TIFF)",
            "Send multipart/form-data with files 'ref' and 'dist'"), name)
    for i, item in enumerate(items):
        if not hasattr(item, "read"):
            where = f"{name}[{i}]" if many else name
            raise ApiError(400, "invalid_field", describe(
                "Field", "form", where, "a text value", "a file part (with a filename)",
                f"Attach the image as a file: -F {name}=@image.png"), where)
    if not many and len(items) > 1:
        raise ApiError(400, "invalid_field", describe(
            "Field", "form", name, f"{len(items)} files", "one",
            "Use /v1/score/batch for several pairs"), name)
    if len(items) > max_pairs:
        raise ApiError(400, "too_many_pairs", describe(
            "Pairs", "form", name, len(items), f"at most {max_pairs}",
            "Split the pairs over several requests"), name)
    return items


def form_domain(request, form, default: str) -> str:
    """The domain named by the query or a form field (400 if they disagree)."""
    unknown = sorted(set(form.keys()) - set(_FIELDS))
    if unknown:
        raise ApiError(400, "unknown_field", describe(
            "Field", "form", unknown[0], "an unknown field", f"only {list(_FIELDS)}",
            "Rename or drop the field"), unknown[0])
    query, field = request.query_params.get("domain"), form.get("domain")
    if query is not None and field is not None and query != field:
        raise ApiError(400, "invalid_field", describe(
            "Domain", "request", "domain", f"'{query}' (query) and '{field}' (form)",
            "one domain", "Name the domain once"), "domain")
    return query or field or default


def decode_image(data: bytes, field: str, max_pixels: int) -> np.ndarray:
    """PNG/JPEG/TIFF bytes as float32 RGB in [0, 1], by ``cdiqa.images.load_image_bytes``.

    The format and the pixel count are checked from the header, before the pixels are decoded.
    """
    check_header(data, field, max_pixels)
    try:
        return load_image_bytes(data, field, max_pixels)
    except ImageTooLarge as exc:
        raise _too_many_pixels(field, exc) from None
    except ImageDecodeError as exc:
        raise _undecodable(field, exc.__cause__ or exc) from None
    except ImageError as exc:  # it decoded; float pixels NaN/inf or outside [0, 1]
        raise ApiError(422, "unprocessable_image", str(exc), field) from None


def check_header(data: bytes, field: str, max_pixels: int) -> int:
    """The decoded pixels (width x height) of an upload, from its header: 400 for no image
    or another format, 413 over ``max_pixels`` (Pillow's own bomb limit included)."""
    from PIL import UnidentifiedImageError

    expected = EXPECTED_IMAGE
    if not data:
        raise ApiError(400, "invalid_image", describe("Image", "field", field, "0 bytes",
                                                      expected, "Attach the file's content"),
                       field)
    try:
        fmt, width, height = image_header(data, field, max_pixels)
        check_pixels(width, height, field, max_pixels)
    except ImageTooLarge as exc:
        raise _too_many_pixels(field, exc) from None
    except ImageDecodeError as exc:
        if isinstance(exc.__cause__, UnidentifiedImageError):
            raise ApiError(400, "invalid_image", describe(
                "Image", "field", field, f"{len(data)} bytes of no known image format",
                expected, "Send the image file itself, not its path or a text encoding"),
                field) from None
        raise _undecodable(field, exc.__cause__ or exc) from None
    if fmt not in FORMATS:
        raise ApiError(400, "invalid_image", describe(
            "Image format", "field", field, fmt, expected, "Convert the image to PNG"), field)
    return width * height


def _too_many_pixels(field: str, exc: ImageTooLarge) -> ApiError:
    return ApiError(413, "image_too_large", str(exc), field)


def _undecodable(field: str, exc: BaseException) -> ApiError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ApiError(400, "invalid_image", describe(
        "Image", "field", field, f"bytes that do not decode ({reason})",
        EXPECTED_IMAGE, "Send a complete, uncorrupted image file"), field)


# ---- endpoints ----


def create_app(source, config: ServeConfig | None = None):
    """The Starlette app serving ``source``.

    Args:
        source: a loaded ``cdiqa.runtime.Scorer`` (shared, left open at shutdown), a callable
            returning one (loaded at start-up, closed at shutdown), or a bundle path.
        config: server options (the host/port fields are used by ``serve`` only).
    """
    import os

    config = config or ServeConfig()
    config.check()
    applications = _lazy.lazy_import("starlette.applications", purpose="The HTTP server")
    from starlette.routing import Route

    if isinstance(source, (str, os.PathLike)):
        source = _loader(source, config)
    service = Service(source, config)
    h = _Handlers(service)
    routes = [Route("/v1/score", h.wrap("score", h.score), methods=["POST"]),
              Route("/v1/score/batch", h.wrap("score_batch", h.score_batch), methods=["POST"]),
              Route("/healthz", h.wrap("healthz", h.healthz), methods=["GET"]),
              Route("/readyz", h.wrap("readyz", h.readyz), methods=["GET"]),
              Route("/metrics", h.wrap("metrics", h.metrics), methods=["GET"]),
              Route("/openapi.json", h.wrap("openapi", h.openapi), methods=["GET"])]
    app = applications.Starlette(routes=routes, lifespan=h.lifespan,
                                 exception_handlers={404: h.not_found, 405: h.not_allowed})
    app.state.service = service
    return app


def _loader(bundle, config: ServeConfig) -> Callable:
    def load():
        from cdiqa.runtime import Scorer, SessionOptions

        return Scorer.load(bundle, config.backend, config.device, config.domain,
                           options=SessionOptions(threads=config.threads),
                           max_batch=config.max_batch, tile=config.tile,
                           max_pixels=config.max_pixels)
    return load


class _Handlers:
    """The endpoints of one app, over its ``Service``."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.config = service.config

    def wrap(self, endpoint: str, handler):
        """Answer ``ApiError`` as JSON, anything else as 500; count and time every request."""
        from starlette.requests import ClientDisconnect

        async def run(request):
            start = time.perf_counter()
            request_id = request_id_from(request.headers.get("x-request-id"))
            try:
                response = await handler(request, request_id)
            except ApiError as exc:
                response = self.error_response(exc)
            except ClientDisconnect:  # nobody reads the answer; counted, not logged as a bug
                response = self.error_response(ApiError(
                    400, "invalid_body", "Body for request 'body': got a disconnect before its "
                    "end, expected the whole body. Keep the connection open until answered."))
            except Exception:  # a bug: logged with its traceback, the server keeps serving
                log.exception("cdiqa server: internal error on %s", endpoint)
                response = self.error_response(ApiError(
                    500, "internal", f"Request for endpoint '{endpoint}': got an internal "
                    "error, expected a result. Report it with the server log."))
            response.headers["X-Request-Id"] = request_id
            self.service.metrics.observe_request(endpoint, response.status_code,
                                                 time.perf_counter() - start)
            return response

        run.__name__ = endpoint
        return run

    def error_response(self, exc: ApiError):
        from starlette.responses import JSONResponse

        self.service.metrics.errors.labels(kind=exc.code).inc()
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def not_found(self, request, exc):
        return self._unmatched(404, "not_found", f"Path for request '{request.url.path}': got "
                               "no such route, expected one of the routes in /openapi.json. "
                               "Check the URL.")

    async def not_allowed(self, request, exc):
        allow = (getattr(exc, "headers", None) or {}).get("Allow", "")  # Starlette's route
        return self._unmatched(405, "method_not_allowed", describe(
            "Method", "path", request.url.path, request.method, allow or "another method",
            f"Use {allow.split(',')[0] if allow else 'the method in /openapi.json'}"),
            {"Allow": allow} if allow else None)

    def _unmatched(self, status: int, code: str, message: str,
                   headers: dict[str, str] | None = None):
        response = self.error_response(ApiError(status, code, message, headers=headers))
        self.service.metrics.observe_request("unmatched", status, 0.0)
        return response

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        """Warm up in a thread (``/readyz`` answers 503 until done); drain at shutdown."""
        loader = threading.Thread(target=self.service.start, name="cdiqa-warmup", daemon=True)
        loader.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self.service.close)

    def _ready_or_503(self) -> None:
        if self.service.closing:
            raise _shutting_down(self.config)
        if not self.service.ready.is_set():
            state = f"failed ({self.service.failure})" if self.service.failure else "loading"
            raise ApiError(503, "not_ready", describe(
                "State", "server", "model", state, "loaded and warm",
                "Retry shortly" if not self.service.failure else "Fix the bundle and restart"),
                headers={"Retry-After": str(self.config.retry_after)})

    async def score(self, request, request_id: str):
        from starlette.responses import JSONResponse

        deadline = time.monotonic() + self.config.timeout
        self._ready_or_503()
        form = await read_form(request, self.config, 4, deadline)  # 2 + slack: named errors
        domain = form_domain(request, form, self.service.default_domain)
        self.service.check_domain(domain, "domain")
        ref, dist = (form_files(form, n, False, 1)[0] for n in ("ref", "dist"))
        data = [(await ref.read(), await dist.read())]
        scores = await self._scores(domain, data, deadline, many=False)
        return JSONResponse({"score": scores[0], "domain": domain, "id": request_id})

    async def score_batch(self, request, request_id: str):
        from starlette.responses import JSONResponse

        deadline = time.monotonic() + self.config.timeout
        self._ready_or_503()
        n = self.config.max_pairs
        form = await read_form(request, self.config, 2 * n + 2, deadline)
        domain = form_domain(request, form, self.service.default_domain)
        self.service.check_domain(domain, "domain")
        refs, dists = (form_files(form, name, True, n) for name in ("ref", "dist"))
        if len(refs) != len(dists):
            raise ApiError(400, "count_mismatch", describe(
                "Count", "form", "dist", len(dists), f"{len(refs)} like 'ref'",
                "Send one distorted image per reference"), "dist")
        data = [(await r.read(), await d.read()) for r, d in zip(refs, dists)]
        scores = await self._scores(domain, data, deadline, many=True)
        return JSONResponse({"scores": scores, "domain": domain, "id": request_id})

    async def _scores(self, domain: str, data: list[tuple[bytes, bytes]], deadline: float,
                      many: bool) -> list:
        """Decode and submit every pair in one worker-thread call (Pillow and the image
        checks stay off the event loop), then wait for all scores until ``deadline``."""
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self.service.executor, self._submit_all, domain, data, many,
                                   deadline)
        job.add_done_callback(lambda f: f.cancelled() or f.exception())  # seen if abandoned
        try:  # decoding counts against the deadline; left running, the job queues nothing new
            futures = await asyncio.wait_for(asyncio.shield(job),
                                             max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise self._timeout() from None
        waiting = [asyncio.wrap_future(f) for f in futures]
        try:
            results = await asyncio.wait_for(asyncio.gather(*waiting),
                                             max(0.0, deadline - time.monotonic()))
        except (asyncio.TimeoutError, Abandoned):
            for f in futures:  # queued pairs go now; a running one stops at its next tile
                f.cancel()
            raise self._timeout() from None
        except CdiqaError as exc:
            raise ApiError(422, "unprocessable_image", str(exc)) from None
        return [round(float(s), 7) for s in results]

    def _submit_all(self, domain: str, data: list[tuple[bytes, bytes]], many: bool,
                    deadline: float | None = None) -> list:
        """Check every header, admit the request's decoded pixels into the budget, decode
        every pair (a bad one fails the request before any is queued), then queue them all
        or none. The pixels stay taken until every pair is scored, failed or abandoned."""
        from cdiqa.runtime.server_budget import release_when_done

        names = [(f"ref[{i}]", f"dist[{i}]") if many else ("ref", "dist")
                 for i in range(len(data))]
        max_pixels = self.config.max_pixels
        pixels = sum(check_header(blob, name, max_pixels)
                     for pair, pair_names in zip(data, names)
                     for blob, name in zip(pair, pair_names))
        self._admit(pixels)
        futures: list = []
        try:
            pairs = []
            for (ref, dist), (rn, dn) in zip(data, names):
                pairs.append((self._decode_in_time(ref, rn, deadline),
                              self._decode_in_time(dist, dn, deadline)))
            for i, (ref, dist) in enumerate(pairs):
                futures.append(self.service.submit(domain, ref, dist, str(i) if many else "",
                                                   deadline))
        except BaseException:
            for f in futures:
                f.cancel()
            release_when_done(self.service.pixels, pixels, futures)
            raise
        release_when_done(self.service.pixels, pixels, futures)
        return futures

    def _decode_in_time(self, data: bytes, name: str, deadline: float | None) -> np.ndarray:
        """``decode_image``, unless the request has timed out (a decode is not stopped once
        begun, but the next one is not started: its answer is already a 504)."""
        if deadline is not None and time.monotonic() > deadline:
            raise self._timeout()
        return decode_image(data, name, self.config.max_pixels)

    def _timeout(self) -> ApiError:
        return ApiError(504, "timeout", describe(
            "Duration", "request", "score", f"over {self.config.timeout} s",
            f"an answer within {self.config.timeout} s",
            "Retry later, send fewer pairs, or raise the server's --timeout"))

    def _admit(self, pixels: int) -> None:
        """Take ``pixels`` from the in-flight budget: 413 if they could never fit, 503 with
        Retry-After while the budget is taken by other requests."""
        budget = self.service.pixels
        if pixels > budget.limit:
            raise ApiError(413, "request_too_large", describe(
                "Pixels", "request", "images", f"{pixels} decoded pixels",
                f"at most {budget.limit} (the server's in-flight pixel budget)",
                "Send fewer or smaller pairs per request, or raise --max-inflight-pixels"))
        if not budget.try_acquire(pixels):
            raise ApiError(503, "busy", describe(
                "Pixels", "server", "in-flight budget", f"{budget.in_use} of {budget.limit} "
                f"decoded pixels taken", f"room for {pixels} more",
                f"Retry after {self.config.retry_after} s or lower the load"),
                headers={"Retry-After": str(self.config.retry_after)})

    async def healthz(self, request, request_id: str):
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok"})

    async def readyz(self, request, request_id: str):
        from starlette.responses import JSONResponse

        self._ready_or_503()
        scorer = self.service.scorer
        return JSONResponse({"status": "ready", "model_id": scorer.manifest.model_id,
                             "domains": sorted(scorer.manifest.domains),
                             "default_domain": self.service.default_domain,
                             "device": scorer.session.device})

    async def metrics(self, request, request_id: str):
        from starlette.responses import Response

        body, ctype = self.service.metrics.render()
        return Response(body, media_type=ctype)

    async def openapi(self, request, request_id: str):
        from starlette.responses import JSONResponse

        return JSONResponse(self.spec())

    def spec(self) -> dict:
        """The OpenAPI document of this app."""
        from cdiqa import __version__
        from cdiqa.runtime.server_openapi import openapi

        scorer = self.service.scorer
        domains = sorted(scorer.manifest.domains) if scorer is not None else []
        default = self.config.domain or (scorer.domain if scorer is not None else "")
        return openapi(domains, default, version=__version__, max_body=self.config.max_body,
                       max_pairs=self.config.max_pairs)


# ---- running it ----


def serve(bundle, config: ServeConfig | None = None, *, ready: Callable[[str], None] | None
          = None) -> None:
    """Load ``bundle`` and serve it until SIGINT/SIGTERM (blocking).

    The bundle is loaded before the port opens, so a bad bundle fails at once. With port 0
    a free port is picked; ``ready(url)`` (default: print) gets the bound address.
    """
    config = config or ServeConfig()
    config.check()
    uvicorn = _lazy.lazy_import("uvicorn", purpose="The HTTP server")  # before the load
    scorer = _loader(bundle, config)()
    app = None
    try:
        app = create_app(scorer, config)
        sock, url = _listen(config.host, config.port)
        server = uvicorn.Server(uvicorn_config(app, config))
        (ready or (lambda u: print(f"cdiqa serving on {u}", flush=True)))(url)
        with _quiet_signals():
            server.run(sockets=[sock])
    finally:
        if app is None or app.state.service.drained:  # else a stream may still be using it
            scorer.close()


def uvicorn_config(app, config: ServeConfig):
    """The ``uvicorn.Config`` that ``serve`` runs ``app`` with.

    h11 is named, not left to uvicorn's choice ("auto" takes httptools when installed):
    the header size limit is h11's setting, and h11 is the parser the tests exercise.
    """
    uvicorn = _lazy.lazy_import("uvicorn", purpose="The HTTP server")
    return uvicorn.Config(
        app, http="h11", log_level="info", access_log=config.access_log, lifespan="on",
        timeout_keep_alive=config.keep_alive, limit_concurrency=config.max_concurrency,
        h11_max_incomplete_event_size=config.max_header,
        timeout_graceful_shutdown=math.ceil(config.timeout) + 5)


def _listen(host: str, port: int) -> tuple[socket.socket, str]:
    """A listening socket (connections queue from now on) and its URL; port 0 picks one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(describe("Address", "server", f"{host}:{port}", exc.strerror or exc,
                                   "a free address of this machine",
                                   "Pick another --port (0: any free one) or --host")) from None
    bound = sock.getsockname()[1]
    return sock, (f"http://[{host}]:{bound}" if family == socket.AF_INET6
                  else f"http://{host}:{bound}")


@contextlib.contextmanager
def _quiet_signals():
    """Let a graceful shutdown end with exit status 0.

    uvicorn handles SIGINT/SIGTERM itself (stop accepting, finish the requests in flight,
    run the lifespan shutdown), then restores the previous handlers and raises the signal
    again; with the default handlers that would kill the process after a clean shutdown.
    """
    import signal

    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
