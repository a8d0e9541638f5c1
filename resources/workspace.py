"""The flywheel home: one folder that holds everything a run writes (reports, models, indices, MLflow, caches)."""
from __future__ import annotations

from pathlib import Path

import dagster as dg


class WorkspaceResource(dg.ConfigurableResource):
    home: str

    def path(self, *parts: str, mkdir: bool = True) -> Path:
        p = Path(self.home).expanduser().resolve().joinpath(*parts)
        if mkdir:
            p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def reports_dir(self) -> Path:
        return self.path("reports")

    @property
    def models_dir(self) -> Path:
        return self.path("models")
