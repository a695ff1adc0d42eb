"""The ModelKeeper actor in-process (real pykka actor, real router, real lmdb, a real
in-process venue for the training job): input drift against the champion's training
distribution triggers a retrain; the same distribution does not."""

from __future__ import annotations

import datetime as dt
import os
import shutil

import msgspec
import numpy as np
import pytest
from actor_probes import add_recorder, start_actor, venue_services
from waiting import wait_for

from stockade.actors.model_keeper import ModelKeeper
from stockade.codecs.messages import ModelEvaluation, ModelsCommand
from stockade.config.settings import settings_from_dict
from stockade.supervisors.clock import SimClock
from stockade.supervisors.router import Router
from stockade.trading.feature_vector import FEATURE_NAMES
from stockade.trading.market_hours import NEW_YORK
from stockade.trading.model_lifecycle import reference_of
from stockade.trading.model_store import SHIPPED_DIR
from stockade.trading.training import MODELS

SAMPLE = 100  # min_scored_votes: the live sample the drift check waits for
SHIFTED = "rsi"


def _champion(tmp_path, rng) -> tuple:
    folder = tmp_path / "champion"
    shutil.copytree(SHIPPED_DIR, folder)
    train = rng.normal(size=(5000, len(FEATURE_NAMES)))
    (folder / "reference.json").write_bytes(msgspec.json.encode(reference_of(train)))
    return folder, train


def _settings(folder, **models):
    """AAPL and SPY, the lifecycle on for a logit champion in `folder`; `models`: more [models] keys."""
    return settings_from_dict(
        {
            "trading": {"symbols": ["AAPL", "SPY"]},
            "models": {"dir": str(folder), "names": ["logit"], "lifecycle": True, "train_days": 0.3, **models},
        }
    )


@pytest.mark.parametrize("shift", [0.0, 2.0])
def test_drift_past_the_threshold_starts_a_retrain_and_no_drift_does_not(tmp_path, shift):
    rng = np.random.default_rng(11)
    folder, _ = _champion(tmp_path, rng)
    settings = _settings(folder, retrain_at="", min_scored_votes=SAMPLE, psi_threshold=0.25)
    assert "logit" in MODELS
    with venue_services(tmp_path / "data", settings, seed=5) as svc:
        router = Router()
        sink, _ = add_recorder(router, "alerter")
        ref = start_actor(router, ModelKeeper, "model_keeper", {"services": svc, "data_dir": str(tmp_path / "data")})
        try:
            live = rng.normal(size=(SAMPLE, len(FEATURE_NAMES)))
            live[:, FEATURE_NAMES.index(SHIFTED)] += shift
            for i, x in enumerate(live):
                router.tell(
                    "model_keeper",
                    ModelEvaluation(
                        symbol="AAPL" if i % 2 else "SPY",
                        set_id="initial",
                        members=("logit",),
                        models=("x",),
                        p_up=(0.6,),
                        x=tuple(x.tolist()),
                        price=100.0,
                        quote_recv_ns=1_000 + i,
                    ),
                    "test",
                )

            def show() -> dict:
                return router.ask("model_keeper", ModelsCommand("show"), timeout=10)

            m = wait_for(lambda: show()["champion"]["drift"] or None, 30, 0.05, "the drift check over the sample")
            assert m["rows"] == SAMPLE
            if shift:
                assert m["feature"] == SHIFTED and m["psi"] > 0.25
                shown = wait_for(lambda: (s := show())["training"] and s, 30, 0.05, "a retrain started")
                assert shown["training"]["reason"].startswith(f"drift: {SHIFTED}: PSI")
                kinds = [e["kind"] for e in shown["events"]]
                assert kinds[-2:] == ["retrain-started", "drift"], kinds  # newest first
                pid = shown["training"]["pid"]
            else:
                assert m["psi"] < 0.25
                shown = show()
                assert shown["training"] is None and shown["events"] == []
        finally:
            ref.stop(timeout=30)  # its teardown kills a running job
            sink.stop(timeout=10)
        if shift:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)  # killed and reaped


def _new_york_ns(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=NEW_YORK).timestamp()) * 1_000_000_000


def test_the_schedule_skips_a_holiday_of_the_brokers_calendar(tmp_path):
    """Thanksgiving 2026 (Thursday 26 November) is a weekday without a session in the
    broker's calendar: no scheduled retrain that evening. The next day (an early close)
    is a session: the retrain starts."""
    rng = np.random.default_rng(3)
    folder, _ = _champion(tmp_path, rng)
    settings = _settings(folder, retrain_at="16:30")
    clock = SimClock(_new_york_ns(2026, 11, 26, 12, 0), 1)
    with venue_services(tmp_path / "data", settings, seed=5, clock="nyse") as svc:
        router = Router()
        sink, _ = add_recorder(router, "alerter")
        extras = {"services": svc, "data_dir": str(tmp_path / "data")}
        ref = start_actor(router, ModelKeeper, "model_keeper", extras, clock=clock)
        try:

            def show() -> dict:
                return router.ask("model_keeper", ModelsCommand("show"), timeout=10)

            show()  # set up: its lifecycle timer is on the clock
            clock.advance_to(_new_york_ns(2026, 11, 26, 17, 0))  # a tick past 16:30 on the holiday
            clock.advance_to(_new_york_ns(2026, 11, 26, 23, 0))
            shown = show()  # after the ticks: the keeper handles its messages in order
            assert shown["training"] is None, shown["training"]
            assert [e for e in shown["events"] if e["kind"] == "retrain-started"] == []
            clock.advance_to(_new_york_ns(2026, 11, 27, 16, 31))
            shown = wait_for(lambda: (s := show())["training"] and s, 30, 0.05, "the scheduled retrain on Friday")
            assert shown["training"]["reason"] == "scheduled at 16:30 New York time"
        finally:
            ref.stop(timeout=30)  # its teardown kills the running job
            sink.stop(timeout=10)
