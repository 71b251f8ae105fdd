"""A Triton-layout model repository: ``REPO/NAME/VERSION/model.kiln`` or ``model.onnx``,
VERSION a positive integer. Every model is loaded at start; a request without a version gets
the newest. Loading a model makes one Session per instance and a batcher over them."""

from __future__ import annotations

import dataclasses
import re
import threading
from pathlib import Path
from typing import Any

from kiln.errors import KilnError
from kiln.runtime.serve.batcher import DynamicBatcher
from kiln.runtime.serve.config import ServeConfig
from kiln.runtime.serve.metrics import Metrics

MODEL_FILES = ("model.kiln", "model.onnx")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ModelNotFound(KilnError):
    """No such model or version in the repository (404)."""


@dataclasses.dataclass
class ModelVersion:
    """One loaded version: its file, its Sessions and the batcher in front of them."""

    name: str
    version: str
    path: Path
    sessions: list[Any]
    batcher: DynamicBatcher

    @property
    def session(self) -> Any:
        return self.sessions[0]


def scan(root: Path) -> dict[str, dict[str, Path]]:
    """{model name: {version: model file}} of what the repository folder holds."""
    if not root.is_dir():
        raise KilnError(f"model repository {root} is not a folder (expected "
                        "REPO/NAME/VERSION/model.onnx or model.kiln)")
    found: dict[str, dict[str, Path]] = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if not _NAME.match(model_dir.name):
            continue
        for version_dir in model_dir.iterdir():
            if not (version_dir.is_dir() and version_dir.name.isdigit()
                    and int(version_dir.name) > 0):
                continue
            for file_name in MODEL_FILES:
                if (version_dir / file_name).is_file():
                    found.setdefault(model_dir.name, {})[version_dir.name] = \
                        version_dir / file_name
                    break
    return found


class ModelRepository:
    """The loaded models of one server; thread-safe load/unload."""

    def __init__(self, config: ServeConfig, metrics: Metrics):
        self.config = config
        self.root = Path(config.repository)
        self.metrics = metrics
        self._models: dict[str, dict[str, ModelVersion]] = {}
        self._lock = threading.Lock()

    def load_all(self) -> None:
        found = scan(self.root)
        if not found:
            raise KilnError(f"model repository {self.root} holds no model (expected "
                            "REPO/NAME/VERSION/model.onnx or model.kiln)")
        for name in found:
            self.load(name)

    def index(self) -> list[dict[str, str]]:
        """Triton's repository index: every model version on disk and whether it is loaded."""
        rows = []
        for name, versions in scan(self.root).items():
            for version in sorted(versions, key=int):
                ready = version in self._models.get(name, {})
                rows.append({"name": name, "version": version,
                             "state": "READY" if ready else "UNAVAILABLE"})
        return rows

    def load(self, name: str) -> list[str]:
        """(Re)load every version of ``name`` found on disk; returns the versions."""
        import kiln

        versions = scan(self.root).get(name)
        if not versions:
            raise ModelNotFound(f"model '{name}' is not in the repository {self.root}")
        loaded: dict[str, ModelVersion] = {}
        for version, path in versions.items():
            sessions = [kiln.Session(str(path), backend=self.config.backend,
                                     threads=self.config.threads)
                        for _ in range(self.config.instances)]
            batcher = DynamicBatcher(sessions, metrics=self.metrics.for_model(name, version),
                                     name=f"{name}/{version}", **self.config.batcher_options())
            loaded[version] = ModelVersion(name, version, path, sessions, batcher)
        with self._lock:
            old = self._models.get(name, {})
            self._models[name] = loaded
        for model in old.values():
            model.batcher.close()
        return sorted(loaded, key=int)

    def unload(self, name: str) -> None:
        """Stop serving ``name``; queued requests finish first."""
        with self._lock:
            old = self._models.pop(name, None)
        if old is None:
            raise ModelNotFound(f"model '{name}' is not loaded")
        for model in old.values():
            model.batcher.close()

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFound(f"model '{name}' is not loaded; loaded models: "
                                f"{sorted(self._models)}")
        if version is None or version == "":
            return versions[max(versions, key=int)]
        if version not in versions:
            raise ModelNotFound(f"model '{name}' has no version '{version}'; versions: "
                                f"{sorted(versions, key=int)}")
        return versions[version]

    def versions(self, name: str) -> list[str]:
        self.get(name)
        return sorted(self._models[name], key=int)

    def names(self) -> list[str]:
        return sorted(self._models)

    def close(self) -> None:
        """Drain and stop every batcher."""
        with self._lock:
            models, self._models = self._models, {}
        for versions in models.values():
            for model in versions.values():
                model.batcher.close()
