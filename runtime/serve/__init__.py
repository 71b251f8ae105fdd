"""kiln serve: a model repository behind the KServe v2 / Open Inference Protocol.

protocol.py   request/response codec (JSON tensors and the binary tensor data extension)
repository.py REPO/NAME/VERSION/model.{kiln,onnx}: load, unload, pick a version
batcher.py    the dynamic batcher: one queue per model version, instances pull batches
metrics.py    Prometheus metrics per model and version
app.py        the ASGI app (starlette) that ties them together
server.py     the embedded uvicorn server with graceful SIGTERM
ray_runner.py the same app as a Ray Serve ingress, N replicas or autoscaled
loadgen.py    open-loop load against a server URL (``kiln bench --url``)
"""
