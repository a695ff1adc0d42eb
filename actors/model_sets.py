"""Which model set serves: the lifecycle's champion, or what the settings choose.

Shared by the analyzers (at start) and the model keeper, so both agree
without asking each other. The keeper's champion (storage `model_sets`,
role "champion") serves while the settings still choose the folder they
chose when it was promoted; an operator who points `[models] dir`
elsewhere (or trains into <data_dir>/models for the first time) wins.
"""

from __future__ import annotations

from pathlib import Path

from stockade.codecs.records import ModelSetRecord
from stockade.config import paths
from stockade.config.settings import Settings
from stockade.storage.store import Store
from stockade.trading.model_store import resolve_dir

INITIAL_SET_ID = "initial"
CHAMPION = "champion"


def settings_folder(settings: Settings, data_dir: Path | None) -> Path:
    """The models folder `[models]` chooses (the analyzer's choice before any promotion)."""
    return resolve_dir(settings.models.dir, paths.models_dir(data_dir) if data_dir is not None else None)


def serving_set(settings: Settings, store: Store, data_dir: Path | None) -> ModelSetRecord:
    """The set the analyzers vote with: the stored champion, else the settings' folder."""
    origin = str(settings_folder(settings, data_dir))
    champion = store.model_sets.get(CHAMPION)
    if champion is not None and champion.origin == origin:
        return champion
    return ModelSetRecord(
        set_id=INITIAL_SET_ID, folder=origin, names=tuple(settings.models.names), created_ns=0, origin=origin
    )
