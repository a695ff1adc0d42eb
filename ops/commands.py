"""The control socket's commands: status, halt, reduce, resume, kill, pending,
approve, reject, alerts, audit, models, and (fault injection only) crash and hang.

Handlers run on the control server's connection threads. They read storage
and the router directly; the only `ask`s (always with a timeout) go to the
voter (parked proposals), to the model keeper (models) and to EmergencyStop (kill).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Any

import msgspec

from stockade.actors import names
from stockade.actors.emergency_stop import emergency_liquidation
from stockade.actors.services import Services
from stockade.actors.tree import SUPERVISOR_NAMES
from stockade.codecs.messages import ApproveProposal, Kill, ListPending, ModelsCommand, RejectProposal, TradingState
from stockade.ops.alerts import report as alert_report
from stockade.ops.control import CommandError, ControlServer, arg_float, arg_int, arg_str
from stockade.supervisors.faults import FaultInjectionDisabled
from stockade.supervisors.runtime import Tree

log = logging.getLogger(__name__)

MODELS_ACTIONS = ("show", "promote", "rollback", "retrain")


def status(svc: Services, tree: Tree) -> dict[str, Any]:
    """What an operator needs at a glance."""
    state = svc.trading_state()
    actors = [
        {
            "name": a.name,
            "alive": a.alive,
            "restarts": a.restarts,
            "state": a.state,
            "mailbox": a.mailbox,
            "supervisor": a.name in SUPERVISOR_NAMES,
            "refused": a.refused,
        }
        for a in tree.snapshot()
    ]
    positions = [
        {"symbol": p.symbol, "qty": p.qty, "avg_entry_price": round(p.avg_entry_price, 4)}
        for p in svc.store.positions.values()
        if p.qty != 0
    ]
    orders = [
        {
            "client_order_id": o.client_order_id,
            "symbol": o.symbol,
            "side": o.side,
            "qty": o.qty,
            "type": o.order_type,
            "state": o.state,
            "filled_qty": o.filled_qty,
        }
        for o in svc.store.open_orders()
    ]
    latest = svc.store.equity.latest(1)
    equity = latest[0].equity if latest else None
    return {
        "trading_state": state.state,
        "trading_state_reason": state.reason,
        "venue": svc.broker.venue,
        "trading_url": svc.broker.endpoints.trading_url,
        "healthy": tree.healthy(),
        "uptime_s": round((time.time_ns() - svc.started_ns) / 1e9, 1),
        "actors": actors,
        "positions": positions,
        "open_orders": orders,
        "equity": equity,
        # Counters that show the pipeline moving: orders we placed, risk decisions.
        "orders_placed": svc.store.orders_placed,
        "decisions": svc.store.decisions.count(),
        "dead_letters": tree.router.dead_letters,
        # What replaced (fenced) instances tried and were refused: name -> storage/journal/tell/rest -> count.
        "fenced_refusals": tree.router.refusal_counts(),
        "market_data": svc.stats.get("market_data", {}),
        "fault_injection": svc.faults.enabled,
        "faults_pending": svc.faults.pending() if svc.faults.enabled else {},
        "crashes_on_start": svc.faults.start_crashes() if svc.faults.enabled else {},
    }


def register_commands(server: ControlServer, svc: Services, tree: Tree) -> None:
    ask_timeout = svc.settings.supervision.ask_timeout_s

    def set_state(state: TradingState, args: dict[str, Any]) -> dict[str, Any]:
        reason = arg_str(args, "reason", "operator")
        record = svc.set_trading_state(state, reason, "control")
        log.warning("trading state set to %s by the operator: %s", state, reason)
        return msgspec.to_builtins(record)

    def kill(args: dict[str, Any]) -> dict[str, Any]:
        reason = arg_str(args, "reason", "operator kill")
        wait_s = svc.settings.emergency.flat_timeout_s + 15.0
        try:
            future = tree.router.ask(names.EMERGENCY_STOP, Kill(reason, "control"), timeout=ask_timeout)
            report = future.result(timeout=wait_s)
        except concurrent.futures.TimeoutError:
            raise CommandError(f"liquidation still running after {wait_s:.0f}s; check status") from None
        except Exception as exc:
            # EmergencyStop is down or hung: liquidate from here, own client.
            log.error("emergency_stop unavailable (%r); liquidating from the control thread", exc)
            report = emergency_liquidation(svc, reason, "control")
        result = msgspec.to_builtins(report)
        if not report.flat:
            raise CommandError(f"NOT flat after liquidation: {result}")
        return result

    def ask_actor(name: str, msg: Any) -> Any:
        try:
            result = tree.router.ask(name, msg, timeout=ask_timeout)
        except Exception as exc:
            raise CommandError(f"{name} did not answer: {exc!r}") from None
        if isinstance(result, dict) and "error" in result:
            raise CommandError(result["error"])
        return result

    def ask_voter(msg: Any) -> Any:
        return ask_actor(names.ENSEMBLE_VOTER, msg)

    def models(args: dict[str, Any]) -> Any:
        action = arg_str(args, "action", "show")
        if action not in MODELS_ACTIONS:
            raise CommandError(f"models: unknown action {action!r} (one of {', '.join(MODELS_ACTIONS)})")
        return ask_actor(names.MODEL_KEEPER, ModelsCommand(action))  # type: ignore[arg-type]

    def alerts(args: dict[str, Any]) -> dict[str, Any]:
        n = arg_int(args, "n", 20, minimum=1)
        try:
            return alert_report.report(
                svc.store,
                svc.stats.get("alerts"),
                limit=n,
                min_level=arg_str(args, "level", "INFO").upper(),
                kind=arg_str(args, "kind", ""),
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None

    def audit(args: dict[str, Any]) -> list[dict[str, Any]]:
        n = arg_int(args, "n", 20, minimum=1)
        return [msgspec.to_builtins(a) for a in svc.store.audit.latest(min(n, 1000))]

    def crash(args: dict[str, Any]) -> dict[str, Any]:
        name = _actor(args)
        times = arg_int(args, "times", 1, minimum=1)
        on_next_message = args.get("on_next_message", False)
        if not isinstance(on_next_message, bool):
            raise CommandError(f"argument 'on_next_message' must be true or false, got {on_next_message!r}")
        try:
            if on_next_message:
                if times != 1:
                    raise CommandError("times applies to a crash now, not to one armed for the next message")
                svc.faults.crash(name)
                return {"crash": name, "when": "on its next message"}
            now = svc.faults.crash_now(name, tree.router.lookup(name), times)
        except FaultInjectionDisabled as exc:
            raise CommandError(str(exc)) from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        # Between instances (restarting): the next instance takes the first crash.
        return {"crash": name, "when": "now" if now else "as its next instance starts", "times": times}

    def hang(args: dict[str, Any]) -> dict[str, Any]:
        name = _actor(args)
        seconds = arg_float(args, "seconds", minimum=0.0)
        try:
            svc.faults.hang(name, seconds)
        except FaultInjectionDisabled as exc:
            raise CommandError(str(exc)) from None
        return {"hang": name, "seconds": seconds}

    def _actor(args: dict[str, Any]) -> str:
        name = arg_str(args, "name")
        if name not in tree.router.names():
            raise CommandError(f"no actor named {name!r}; see status")
        return name

    server.register("status", lambda args: status(svc, tree), "trading state, actors, positions, orders, equity")
    server.register("halt", lambda args: set_state("HALTED", args), "stop all new orders", usage="halt [REASON]")
    server.register(
        "reduce", lambda args: set_state("REDUCING", args), "only exposure-reducing orders", usage="reduce [REASON]"
    )
    server.register("resume", lambda args: set_state("ACTIVE", args), "trade normally again", usage="resume [REASON]")
    server.register(
        "kill", kill, "HALT, cancel all orders, close all positions; answers when flat", usage="kill [REASON]"
    )
    server.register("pending", lambda args: ask_voter(ListPending()), "proposals waiting for approval")
    server.register(
        "approve",
        lambda args: ask_voter(ApproveProposal(arg_str(args, "id"))),
        "approve a proposal",
        usage="approve ID",
    )
    server.register(
        "reject",
        lambda args: ask_voter(RejectProposal(arg_str(args, "id"), arg_str(args, "reason", "operator"))),
        "reject a proposal",
        usage="reject ID [REASON]",
    )
    server.register(
        "alerts",
        alerts,
        "recent alerts (filtered), stored counts per level and kind, delivery counters",
        usage="alerts [N] [LEVEL] [kind=KIND]",
    )
    server.register(
        "models",
        models,
        "trained models: champion, challenger, metrics, lifecycle events; promote the last challenger, "
        "roll back to the previous champion, or retrain now",
        usage="models [show|promote|rollback|retrain]",
    )
    server.register("audit", audit, "the last control commands: who (uid, pid), what, outcome", usage="audit [N]")
    server.register(
        "crash",
        crash,
        "fault injection: NAME crashes now (a fault message into its mailbox), and its next TIMES-1 "
        "instances as they come up (a drill past restart intensity); on_next_message=true: armed for "
        "its next message instead",
        usage="crash NAME [--times N] [--on-next-message]",
    )
    server.register(
        "hang", hang, "fault injection: NAME blocks for SECONDS on its next message", usage="hang NAME SECONDS"
    )
