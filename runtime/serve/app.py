"""The ASGI app of ``kiln serve``: the KServe v2 / Open Inference Protocol over a model
repository. It owns no inference logic: a request becomes feeds, the model's batcher runs
them on a Session, the outputs go back. The same app runs under uvicorn (embedded) and as
the ingress of every Ray Serve replica.

Status codes: 400 for a malformed request or feeds that do not fit the model (kiln's
InputError message), 404 for an unknown model or version, 503 with Retry-After when the
queue is full or the request's queue deadline passed, 500 when the backend run failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kiln import __version__
from kiln.errors import InputError, KilnError
from kiln.runtime.serve import protocol
from kiln.runtime.serve.batcher import Overloaded
from kiln.runtime.serve.config import ServeConfig
from kiln.runtime.serve.metrics import Metrics
from kiln.runtime.serve.repository import ModelNotFound, ModelRepository

#: bodies larger than this are decoded off the event loop (JSON tensors are slow to parse).
_INLINE_DECODE_BYTES = 64 * 1024


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(config: ServeConfig, repository: ModelRepository | None = None) -> Starlette:
    """The v2 app over ``config.repository``; every model is loaded before this returns."""
    config.check()
    metrics = repository.metrics if repository is not None else Metrics()
    repo = repository or ModelRepository(config, metrics)
    if repository is None:
        repo.load_all()
    state: dict[str, Any] = {"draining": False}

    async def live(_: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(_: Request) -> Response:
        ok = not state["draining"] and bool(repo.names())
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def server_metadata(_: Request) -> Response:
        return JSONResponse({"name": "kiln", "version": __version__,
                             "extensions": ["binary_tensor_data", "model_repository"]})

    def _model(request: Request) -> Any:
        return repo.get(request.path_params["name"], request.path_params.get("version"))

    async def model_metadata(request: Request) -> Response:
        try:
            model = _model(request)
        except ModelNotFound as exc:
            return _error(404, str(exc))
        return JSONResponse({
            "name": model.name, "versions": repo.versions(model.name),
            "platform": f"kiln_{model.session.backend_name}",
            "inputs": protocol.tensor_metadata(model.session.inputs),
            "outputs": protocol.tensor_metadata(model.session.outputs),
            "parameters": {"max_batch_size": model.batcher.max_batch,
                           "dynamic_batching": model.batcher.batchable}})

    async def model_ready(request: Request) -> Response:
        try:
            _model(request)
        except ModelNotFound as exc:
            return _error(404, str(exc))
        ok = not state["draining"]
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def infer(request: Request) -> Response:
        start = time.perf_counter()
        try:
            model = _model(request)
        except ModelNotFound as exc:
            return _error(404, str(exc))
        status, response = await _infer(model, request)
        model.batcher.metrics.answered(status, time.perf_counter() - start)
        return response

    async def _infer(model: Any, request: Request) -> tuple[int, Response]:
        body = await request.body()
        header_length = request.headers.get(protocol.HEADER_LENGTH)
        try:
            if len(body) > _INLINE_DECODE_BYTES and header_length is None:
                decoded = await run_in_threadpool(protocol.decode_request, body, header_length)
            else:
                decoded = protocol.decode_request(body, header_length)
            results = await asyncio.wrap_future(
                model.batcher.submit(decoded.feeds, decoded.outputs))
            payload, json_size = protocol.encode_response(model.name, model.version, decoded,
                                                          results)
        except InputError as exc:
            return 400, _error(400, str(exc))
        except Overloaded as exc:
            return 503, _error(503, str(exc), {"Retry-After": str(config.retry_after_s)})
        except KilnError as exc:
            return 500, _error(500, f"model '{model.name}' failed: {exc}")
        except Exception as exc:  # a backend failure answers 500; the server stays up
            return 500, _error(500, f"model '{model.name}' failed: {type(exc).__name__}: {exc}")
        if json_size is None:
            return 200, Response(payload, media_type="application/json")
        return 200, Response(payload, media_type="application/octet-stream",
                             headers={protocol.HEADER_LENGTH: str(json_size)})

    async def repository_index(_: Request) -> Response:
        return JSONResponse(repo.index())

    async def load(request: Request) -> Response:
        try:
            await run_in_threadpool(repo.load, request.path_params["name"])
        except ModelNotFound as exc:
            return _error(404, str(exc))
        except KilnError as exc:
            return _error(400, str(exc))
        return JSONResponse({})

    async def unload(request: Request) -> Response:
        try:
            await run_in_threadpool(repo.unload, request.path_params["name"])
        except ModelNotFound as exc:
            return _error(404, str(exc))
        return JSONResponse({})

    async def prometheus(_: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        state["draining"] = True
        repo.close()  # the loop has nothing else to do: every connection is closed

    model = "/v2/models/{name}"
    version = model + "/versions/{version}"
    routes = [
        Route("/v2/health/live", live), Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route(model, model_metadata), Route(version, model_metadata),
        Route(model + "/ready", model_ready), Route(version + "/ready", model_ready),
        Route(model + "/infer", infer, methods=["POST"]),
        Route(version + "/infer", infer, methods=["POST"]),
        Route("/v2/repository/index", repository_index, methods=["POST", "GET"]),
        Route("/v2/repository/models/{name}/load", load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", unload, methods=["POST"]),
        Route("/metrics", prometheus),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.repository = repo
    app.state.serve = state
    return app
