"""What a .kiln artifact was compiled for, and whether it loads on this machine as built.

``describe_artifact`` reads the manifest and asks the artifact's backend what its blobs record
(``Backend.describe_blobs``: for the native backend the plan ISA and the kernels it chose),
then makes the decision ``kiln.load`` would make here, without compiling anything: reuse the
blobs, or rebuild and why.
"""

from __future__ import annotations

import os
from typing import Any

from kiln.backends import registry
from kiln.runtime.artifact import load_artifact, options_miss


def describe_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """The artifact's backend, target, options, blob details and reuse decision here."""
    from kiln.backends.base import CompileOptions
    from kiln.runtime.compile import artifact_target

    artifact = load_artifact(path)
    manifest = artifact.manifest
    built = manifest.get("pipeline", {}).get("options") or {}
    info: dict[str, Any] = {
        "artifact": str(path), "backend": artifact.backend,
        "backend_version": artifact.backend_version, "target": artifact.target,
        "level": manifest.get("pipeline", {}).get("level"),
        "precision": built.get("precision"), "blobs": sorted(artifact.blobs),
        "format": "{major}.{minor}".format(**{"minor": 0, **manifest["format_version"]}),
        # bytes per member, as stored (uncompressed): where an artifact's size goes
        "members": {name: entry.get("size") for name, entry in
                    sorted(manifest["members"].items())},
        "details": {}, "loads_here_as_built": False, "rebuild_reason": None,
    }
    if artifact.backend not in registry.backend_names():  # a partitioned artifact: one per piece
        info["rebuild_reason"] = "inspect describes single-backend artifacts only"
        return info
    backend = registry.get_backend(artifact.backend)
    info["details"] = backend.describe_blobs(artifact.blobs)
    status = backend.is_available()
    if not status.ok:
        info["rebuild_reason"] = f"{artifact.backend} is unavailable here: {status.reason}"
        return info
    target = artifact_target("auto", artifact.target)
    miss = artifact.blob_miss(artifact.backend, status.version, str(target))
    if miss is None:
        options = CompileOptions(precision=built.get("precision") or "fp32",
                                 device=built.get("device") or "CPU")
        miss = options_miss(manifest, options)
    info["loads_here_as_built"] = miss is None
    info["rebuild_reason"] = miss
    return info
