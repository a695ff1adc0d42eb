"""ModelKeeper: the trained models' lifecycle in the live daemon.

It watches the serving set (the champion) through the analyzers'
`ModelEvaluation` reports: each member's calls are scored at the label
horizon against the symbol's later price, and the feature vectors are
compared with the training distribution (PSI). A retrain starts when
`[models]` says so:

- scheduled: once a trading day at `retrain_at` (New York time, after the close;
  the broker's calendar says which days trade: none on a holiday);
- triggered: a member's live hit rate is below its trained hold-out accuracy
  by more than `hit_rate_margin` over `min_scored_votes` scored calls, or a
  feature's PSI exceeds `psi_threshold` (not within `retrain_cooldown_s` of
  the last retrain);
- by hand: `ctl models retrain`.

Training runs in its own process (`python -m stockade.ops.retrain`, lower
priority, killed after `train_timeout_s`), never on an actor thread: this
actor only starts it and polls it on its tick. The job scores champion and
challenger on the same out-of-sample window; the keeper checks the
challenger loads complete as the analyzers would load it (a corrupt or
mismatched one is refused) and promotes it only when it beats the champion
by more than `promote_margin` (trading/model_lifecycle.promote_rule).

Promotion stores the new champion (the old one becomes "previous") and
tells every analyzer `SwapModels`: each switches between two evaluations,
so every evaluation votes with one complete set. `ctl models rollback`
swaps back to the previous champion; `ctl models promote` promotes the last
challenger that loaded complete whatever its score.

Every step is a `model_events` record and an alert (`swapped` once every
analyzer has voted with the new set); which set each evaluation voted with
goes to `model_evaluations` (the swap's audit trail).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from stockade.actors import names, ticks
from stockade.actors.model_sets import CHAMPION, serving_set, settings_folder
from stockade.actors.quote_streamer import analyzer_name
from stockade.actors.services import Services
from stockade.broker.rest import redact
from stockade.broker.sessions import broker_calendar
from stockade.codecs.messages import Alert, AlertLevel, ModelEvaluation, ModelsCommand, SwapModels, Tick, Vote
from stockade.codecs.records import ModelEvaluationRecord, ModelEventRecord, ModelSetRecord
from stockade.supervisors.base import StockadeActor, handles
from stockade.trading.feature_vector import FEATURE_NAMES
from stockade.trading.market_hours import Calendar, exchange_day
from stockade.trading.model_lifecycle import (
    PSI_BINS,
    REFERENCE_NAME,
    HitCounter,
    Reference,
    RetrainJob,
    RetrainResult,
    degraded,
    drift,
    parse_hhmm,
    promote_rule,
    scheduled_due,
)
from stockade.trading.model_panel import panel_of
from stockade.trading.model_store import ModelError, load_models, read_manifest
from stockade.trading.training import MODELS
from stockade.trading.voting import HorizonScorer

log = logging.getLogger(__name__)

NAME = names.MODEL_KEEPER
TICK_S = 0.5
EVENTS_SHOWN = 10
SETS_DIR = "model_sets"


class _Job:
    """A training process this keeper started."""

    def __init__(self, set_id: str, folder: Path, proc: subprocess.Popen[bytes], reason: str, started_ns: int) -> None:
        self.set_id = set_id
        self.folder = folder
        self.proc = proc
        self.reason = reason
        self.started_ns = started_ns


class ModelKeeper(StockadeActor):
    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        self.cfg = self.svc.settings.models
        data_dir = self.ctx.extra("data_dir")
        self.data_dir = Path(data_dir) if data_dir else None
        self.params = self.svc.settings.analyzer.to_params()
        self.retrain_at = parse_hhmm(self.cfg.retrain_at) if self.cfg.retrain_at else None
        horizon_s = self.cfg.score_horizon_s or self.cfg.horizon_bars * self.params.bar_seconds
        self.scorer_args = (horizon_s, self.cfg.label_threshold_bps)
        self.job: _Job | None = None
        self.pending: list[ModelEvaluationRecord] = []
        self.serving: dict[str, str] = {}  # symbol -> the set its last evaluation voted with
        self.symbols = frozenset(self.svc.settings.trading.symbols)
        self.awaiting_swap: str | None = None  # a set told to the analyzers, not yet voting everywhere
        self.last_scheduled_ns = 0
        self.last_retrain_ns = 0
        self.sessions: Calendar | None = None  # the broker's, around `sessions_day`; None: not had
        self.sessions_day: dt.date | None = None
        self.sessions_pending = False
        for event in self.svc.store.model_events.latest(500):
            if event.kind == "retrain-started":
                self.last_retrain_ns = max(self.last_retrain_ns, event.ts_ns)
                if event.detail.startswith("scheduled"):
                    self.last_scheduled_ns = max(self.last_scheduled_ns, event.ts_ns)
        self._adopt(serving_set(self.svc.settings, self.svc.store, self.data_dir))
        self.every(TICK_S, ticks.LIFECYCLE)

    def teardown(self) -> None:
        self._flush()
        if self.job is not None:  # a new instance starts afresh: no orphan process
            self._stop_job()

    # ---- the champion ---------------------------------------------------------------

    def _adopt(self, champion: ModelSetRecord) -> None:
        """Watch `champion`: its trained figures, its training distribution, fresh counts."""
        self.champion = champion
        self.trained: dict[str, float] = {}
        self.reference: Reference | None = None
        try:
            manifest = read_manifest(Path(champion.folder))
            wanted = set(champion.names) or {e.name for e in manifest.models}
            self.trained = {e.name: e.holdout.accuracy for e in manifest.models if e.name in wanted}
            if not champion.names:
                self.champion = msgspec.structs.replace(
                    champion, names=tuple(e.name for e in manifest.models if e.name in wanted)
                )
        except ModelError as exc:
            log.warning("model lifecycle: cannot read the champion's manifest: %s", exc)
        ref = Path(champion.folder) / REFERENCE_NAME
        if ref.exists():
            try:
                self.reference = msgspec.json.decode(ref.read_bytes(), type=Reference)
            except (OSError, msgspec.DecodeError) as exc:
                log.warning("model lifecycle: %s unreadable (%s); no drift check", ref, exc)
        self.hits = HitCounter()
        self.scorer = HorizonScorer(*self.scorer_args)
        self.live: collections.deque[tuple[float, ...]] = collections.deque(
            maxlen=max(self.cfg.min_scored_votes, 10 * PSI_BINS)
        )
        self.last_drift: dict[str, Any] | None = None

    # ---- evaluations ----------------------------------------------------------------

    @handles(ModelEvaluation)
    def on_evaluation(self, msg: ModelEvaluation) -> None:
        self.pending.append(
            ModelEvaluationRecord(
                ts_ns=msg.quote_recv_ns, symbol=msg.symbol, set_id=msg.set_id, members=msg.members, models=msg.models
            )
        )
        self.serving[msg.symbol] = msg.set_id
        if self.awaiting_swap == msg.set_id and all(self.serving.get(s) == msg.set_id for s in self.symbols):
            self.awaiting_swap = None
            self._event("swapped", msg.set_id, f"every analyzer ({len(self.symbols)}) votes with it", "INFO")
        if msg.set_id != self.champion.set_id:
            return  # an analyzer still on the old set: not the champion's record
        for member, hit in self.scorer.observe(msg.symbol, msg.price, msg.quote_recv_ns):
            self.hits.record(member, hit)
        for member, p in zip(msg.members, msg.p_up, strict=True):
            lean = 2.0 * p - 1.0
            vote = Vote(msg.symbol, member, float(np.sign(lean)), abs(lean), msg.price, 0, msg.quote_recv_ns, 0.0, 0.0)
            self.scorer.add(vote)
        self.live.append(msg.x)

    def _flush(self) -> None:
        if self.pending:
            batch, self.pending = self.pending, []
            self.svc.store.model_evaluations.add_many(batch, durable=False)

    # ---- the tick: flush, poll the job, check the triggers --------------------------------

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        if tick.what != ticks.LIFECYCLE:
            return
        self._flush()
        now = self.clock.now_ns()
        if self.job is not None:
            self._poll(now)
            return
        if not self.cfg.lifecycle:
            return
        reason = self._trigger(now)
        if reason:
            self._start(reason, now)

    def _trigger(self, now: int) -> str:
        if (
            self.retrain_at is not None
            and scheduled_due(now, self.retrain_at, self.last_scheduled_ns)
            and self._trading_day(now)
        ):
            self.last_scheduled_ns = now
            return f"scheduled at {self.cfg.retrain_at} New York time"
        if now - self.last_retrain_ns < self.cfg.retrain_cooldown_s * 1e9:
            return ""
        bad = degraded(self.hits, self.trained, self.cfg.hit_rate_margin, self.cfg.min_scored_votes)
        if bad:
            d = bad[0]
            self._event(
                "degraded",
                self.champion.set_id,
                f"{d.member}: live hit rate {d.live:.3f} over {d.scored} scored calls, trained {d.trained:.3f}, "
                f"margin {self.cfg.hit_rate_margin:g}",
                "WARNING",
            )
            return (
                f"degraded: {d.member} hit rate {d.live:.3f} < trained {d.trained:.3f} - {self.cfg.hit_rate_margin:g}"
            )
        if self.reference is not None and len(self.live) == self.live.maxlen:
            found = drift(self.reference, np.asarray(self.live, dtype=np.float64), FEATURE_NAMES)
            self.last_drift = {"psi": round(found.psi, 4), "feature": found.feature, "rows": found.rows}
            if found.psi > self.cfg.psi_threshold:
                text = (
                    f"{found.feature}: PSI {found.psi:.3f} > {self.cfg.psi_threshold:g} over {found.rows} evaluations"
                )
                self._event("drift", self.champion.set_id, text, "WARNING")
                return f"drift: {text}"
        return ""

    def _trading_day(self, now: int) -> bool | None:
        """Whether today (New York) is a session by the broker's calendar: a retrain on a
        holiday would train on the same data again. Monday to Friday when the calendar
        could not be had; None while it is being fetched (the schedule waits a tick)."""
        today = exchange_day(now)
        if self.sessions_day != today:
            self.sessions_day = today
            self.sessions_pending = True

            def fetch() -> None:
                try:
                    client = self.svc.broker.trading_client()
                    # a window around today: a holiday is a day without a row, not an empty answer
                    got = broker_calendar(client, today - dt.timedelta(days=7), today + dt.timedelta(days=7))
                    self.sessions = got if got else None
                except Exception as exc:  # any broker failure: weekdays stand in
                    log.warning("models: no broker calendar (%s); the retrain schedule counts weekdays", redact(exc))
                    self.sessions = None
                self.sessions_pending = False  # after `sessions`: the actor thread reads them in that order

            self.clock.background(fetch, "models-calendar")
        if self.sessions_pending:
            return None
        if self.sessions is None:
            return today.weekday() < 5
        return self.sessions.session(today) is not None

    def _start(self, reason: str, now: int) -> str:
        """Start a training process for a challenger; returns its set id."""
        untrainable = [n for n in self.champion.names if n not in MODELS]
        if not self.champion.names or untrainable or self.data_dir is None:
            why = f"members {untrainable} cannot be trained" if untrainable else "no champion members or data dir"
            self._event("retrain-refused", self.champion.set_id, f"{reason}; {why}", "WARNING")
            self.last_retrain_ns = now
            return ""
        set_id = "c" + dt.datetime.fromtimestamp(now / 1e9, dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        folder = self.data_dir / SETS_DIR / set_id
        folder.mkdir(parents=True, exist_ok=True)
        job = RetrainJob(
            out=str(folder / "models"),
            champion=self.champion.folder,
            names=self.champion.names,
            data_url=self.svc.broker.endpoints.data_url,
            feed=self.svc.settings.alpaca.feed,
            symbols=tuple(self.svc.settings.trading.symbols),
            days=self.cfg.train_days,
            end_ns=now,
            horizon_bars=self.cfg.horizon_bars,
            label_threshold_bps=self.cfg.label_threshold_bps,
            seed=self.cfg.seed,
            params=self.params,
        )
        (folder / "job.json").write_bytes(msgspec.json.encode(job))
        env = {k: v for k, v in os.environ.items() if not k.startswith("APCA_")}
        env.update({"APCA_API_KEY_ID": self.svc.broker.key, "APCA_API_SECRET_KEY": self.svc.broker.secret})
        with open(folder / "train.log", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "stockade.ops.retrain", str(folder)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own group: a timeout kills it and anything it started
            )
        self.job = _Job(set_id, folder, proc, reason, now)
        self.last_retrain_ns = now
        self._event("retrain-started", set_id, f"{reason} (pid {proc.pid})", "INFO")
        return set_id

    def _stop_job(self) -> None:
        job = self.job
        if job is None:
            return
        try:
            os.killpg(job.proc.pid, signal.SIGKILL)  # the group the job leads (start_new_session)
        except ProcessLookupError:
            pass
        job.proc.wait(timeout=10)
        self.job = None

    def _poll(self, now: int) -> None:
        job = self.job
        assert job is not None
        code = job.proc.poll()
        if code is None:
            if now - job.started_ns > self.cfg.train_timeout_s * 1e9:
                self._stop_job()
                self._challenger(job, "refused")
                self._event(
                    "train-failed", job.set_id, f"timed out after {self.cfg.train_timeout_s:g} s; killed", "WARNING"
                )
            return
        self.job = None
        try:
            result = msgspec.json.decode((job.folder / "result.json").read_bytes(), type=RetrainResult)
        except (OSError, msgspec.DecodeError) as exc:
            self._challenger(job, "refused")
            self._event("train-failed", job.set_id, f"exit {code}, no readable result ({exc})", "WARNING")
            return
        if not result.ok or result.champion is None or result.challenger is None:
            self._challenger(job, "refused")
            self._event("train-failed", job.set_id, result.error or f"exit {code}", "WARNING")
            return
        record = self._challenger(job, "trained", result)
        problem = self._verify(record)
        if problem:
            self._challenger(job, "refused", result)
            self._event("refused", job.set_id, f"challenger refused: {problem}", "WARNING")
            return
        verdict = promote_rule(result.champion, result.challenger, self.cfg.promote_margin)
        self._event(
            "evaluated",
            job.set_id,
            f"window {result.window}: champion {result.champion.members} {result.champion.score:.4f}, "
            f"challenger {result.challenger.members} {result.challenger.score:.4f} ({result.seconds:.1f} s)",
            "INFO",
        )
        if verdict.promote:
            self._promote(record, f"promoted: {verdict.reason}")
        else:
            self._challenger(job, "kept", result)
            self._event("kept", job.set_id, f"champion kept: {verdict.reason}", "INFO")

    def _challenger(self, job: _Job, status: str, result: RetrainResult | None = None) -> ModelSetRecord:
        record = ModelSetRecord(
            set_id=job.set_id,
            folder=str(job.folder / "models"),
            names=self.champion.names,
            created_ns=job.started_ns,
            members=result.challenger.members if result and result.challenger else {},
            score=result.challenger.score if result and result.challenger else None,
            against=result.champion.score if result and result.champion else None,
            window=result.window if result else "",
            status=status,
            origin=self.champion.origin,
        )
        self.svc.store.model_sets.put("challenger", record)
        return record

    def _verify(self, record: ModelSetRecord) -> str:
        """Why `record` must not serve ("" when it loads complete, as an analyzer would load it)."""
        loaded, errors = load_models(Path(record.folder), record.names, self.params)
        if errors:
            return str(errors[0])
        got = sorted(m.name for m in loaded)
        if got != sorted(record.names):
            return f"has members {got}, the set is {sorted(record.names)}"
        panel_of(loaded)  # merged now, on this thread: the analyzers find it cached
        return ""

    # ---- promotion and rollback ---------------------------------------------------------

    def _promote(self, record: ModelSetRecord, detail: str) -> None:
        old = self.champion
        champion = msgspec.structs.replace(record, status="champion", origin=old.origin)
        store = self.svc.store

        def write(txn: Any) -> None:
            store.model_sets.put(CHAMPION, champion, txn=txn)
            store.model_sets.put("previous", old, txn=txn)
            if record.status != "champion":
                store.model_sets.put("challenger", msgspec.structs.replace(record, status="promoted"), txn=txn)

        store.transact(write, durable=True)
        self._serve(champion)
        self._event("promoted", champion.set_id, f"{detail} (was {old.set_id})", "WARNING")

    def _serve(self, champion: ModelSetRecord) -> None:
        self._adopt(champion)
        self.awaiting_swap = champion.set_id
        swap = SwapModels(champion.set_id, champion.folder, champion.names)
        for symbol in self.svc.settings.trading.symbols:
            self.tell(analyzer_name(symbol), swap)

    @handles(ModelsCommand)
    def on_command(self, cmd: ModelsCommand) -> dict[str, Any]:
        if cmd.action == "show":
            return self.show()
        if cmd.action == "retrain":
            if self.job is not None:
                return {"error": f"challenger {self.job.set_id} is still training"}
            set_id = self._start("by the operator (ctl models retrain)", self.clock.now_ns())
            return {"retrain": set_id} if set_id else {"error": "retrain refused; see ctl models"}
        if cmd.action == "promote":
            record = self.svc.store.model_sets.get("challenger")
            if self.job is not None:
                return {"error": f"challenger {self.job.set_id} is still training"}
            if record is None or record.status not in ("trained", "kept"):
                status = "none" if record is None else f"{record.set_id} {record.status}"
                return {"error": f"no challenger to promote (last: {status})"}
            problem = self._verify(record)
            if problem:
                return {"error": problem}
            self._promote(record, "promoted by the operator (ctl models promote)")
            return {"promoted": record.set_id}
        # rollback
        previous = self.svc.store.model_sets.get("previous")
        if previous is None:
            return {"error": "no previous champion to roll back to"}
        problem = self._verify(previous)
        if problem:
            return {"error": f"previous champion {previous.set_id} cannot serve: {problem}"}
        old = self.champion
        store = self.svc.store

        def write(txn: Any) -> None:
            store.model_sets.put(CHAMPION, previous, txn=txn)
            store.model_sets.delete("previous", txn=txn)

        store.transact(write, durable=True)
        self._serve(previous)
        self._event("rolled-back", previous.set_id, f"rolled back from {old.set_id} by the operator", "WARNING")
        return {"rolled_back_to": previous.set_id, "from": old.set_id}

    def show(self) -> dict[str, Any]:
        def set_view(rec: ModelSetRecord | None) -> dict[str, Any] | None:
            return None if rec is None else msgspec.to_builtins(rec)

        champion = set_view(self.champion) or {}
        champion["trained_holdout_accuracy"] = self.trained
        champion["live_hit_rate"] = {
            m: {"rate": None if r is None else round(r, 4), "scored": self.hits.scored(m)}
            for m in self.champion.names
            for r in [self.hits.rate(m)]
        }
        champion["drift"] = self.last_drift
        job = self.job
        return {
            "lifecycle": self.cfg.lifecycle,
            "settings_folder": str(settings_folder(self.svc.settings, self.data_dir)),
            "champion": champion,
            "previous": set_view(self.svc.store.model_sets.get("previous")),
            "challenger": set_view(self.svc.store.model_sets.get("challenger")),
            "training": None
            if job is None
            else {
                "set_id": job.set_id,
                "reason": job.reason,
                "pid": job.proc.pid,
                "running_s": round((self.clock.now_ns() - job.started_ns) / 1e9, 1),
            },
            "serving": dict(sorted(self.serving.items())),
            "events": [msgspec.to_builtins(e) for e in self.svc.store.model_events.latest(EVENTS_SHOWN)],
        }

    # ---- records and alerts ---------------------------------------------------------------

    def _event(self, kind: str, set_id: str, detail: str, level: AlertLevel) -> None:
        now = self.clock.now_ns()
        self.svc.store.model_events.add(ModelEventRecord(ts_ns=now, kind=kind, set_id=set_id, detail=detail))
        (log.warning if level != "INFO" else log.info)("model lifecycle: %s %s: %s", kind, set_id, detail)
        self.tell(names.ALERTER, Alert(level, f"model-{kind}:{set_id}", f"Models {kind} {set_id}: {detail}", NAME, now))
