"""Run independent units of research work in one process, on a local process pool, or on Ray.

A unit is `(key, payload)`; `fn(payload)` is a module-level function (so a
spawned process or a Ray worker can import it by name). Whatever runs it,
the results come back as one `UnitResult` per unit, in the order the units
were given: merging never depends on which worker finished first, so the
three backends give the same results bit for bit as long as `fn` is a pure
function of its payload (every seed inside the payload, none from the worker).

An exception raised by `fn` is a failed unit (its error kept, never retried:
running it again gives the same error). A worker that dies (killed, out of
memory, `os._exit`) is retried up to `max_retries` times and every start is
counted in the unit's `attempts`: on Ray by the task's own `max_retries`, on
the local pool by rerunning the units that were running when the pool broke
(see `_run_pool`).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal

import msgspec

MAX_RETRIES = 2
RAY_WAIT_S = 1.0  # how long one ray.wait blocks before the loop checks again


class Backend(msgspec.Struct, frozen=True, kw_only=True):
    """Where units run: `inline` (this process), `pool` (spawned processes) or `ray`."""

    kind: Literal["inline", "pool", "ray"] = "inline"
    workers: int = 1
    ray_address: str = ""  # "auto": a running cluster, else a local Ray for this run; or host:port
    max_retries: int = MAX_RETRIES

    def describe(self) -> str:
        if self.kind == "ray":
            return f"ray ({self.ray_address or 'initialised by the caller'})"
        return f"{self.kind} ({self.workers} worker{'s' if self.workers != 1 else ''})"


class UnitResult(msgspec.Struct, kw_only=True):
    key: str
    ok: bool
    value: Any = None
    error: str | None = None
    attempts: int = 1


class WorkersError(Exception):
    """The backend cannot run (Ray missing or unreachable): one line for the user."""


class ClusterLost(WorkersError):
    """The Ray cluster failed under a running job (its head or our connection died)."""


def backend_from_args(ray: str | None, workers: int | None) -> Backend:
    """`--ray ADDRESS` / `--workers N` as a Backend (neither: in this process)."""
    if workers is not None and workers < 1:
        raise WorkersError(f"--workers = {workers}: must be >= 1")
    if ray is not None:
        if not ray.strip():
            raise WorkersError("--ray = '': give auto or a cluster address (host:port)")
        return Backend(kind="ray", workers=workers or 0, ray_address=ray.strip())
    if workers is None or workers == 1:
        return Backend(kind="inline")
    return Backend(kind="pool", workers=workers)


def call(fn: Callable[[Any], Any], payload: Any) -> tuple[bool, Any]:
    """Run one unit: (True, value) or (False, "Type: message") for an exception in `fn`."""
    try:
        return True, fn(payload)
    except Exception as exc:  # any error of a unit is reported with it, not raised
        return False, f"{type(exc).__name__}: {exc}"


def run_units(
    fn: Callable[[Any], Any],
    units: Sequence[tuple[str, Any]],
    backend: Backend,
    on_done: Callable[[UnitResult], None] = lambda _: None,
) -> list[UnitResult]:
    """Every unit's result, in the order of `units`; `on_done` is called as each one finishes."""
    keys = [k for k, _ in units]
    if len(set(keys)) != len(keys):
        raise ValueError("unit keys must be unique")
    if backend.kind == "inline":
        out = []
        for key, payload in units:
            ok, value = call(fn, payload)
            r = _result(key, ok, value, 1)
            on_done(r)
            out.append(r)
        return out
    if backend.kind == "pool":
        return _run_pool(fn, units, backend, on_done)
    return _run_ray(fn, units, backend, on_done)


def _result(key: str, ok: bool, value: Any, attempts: int) -> UnitResult:
    return UnitResult(key=key, ok=ok, value=value if ok else None, error=None if ok else value, attempts=attempts)


def _run_pool(
    fn: Callable[[Any], Any], units: Sequence[tuple[str, Any]], backend: Backend, on_done: Callable[[UnitResult], None]
) -> list[UnitResult]:
    """A shared pool for every unit; after a worker dies, the units it may have taken down rerun alone.

    When a worker dies the pool breaks and fails every unit not yet finished.
    Units that had not started go back to a shared pool, uncharged. Units that
    were running are rerun each in a pool of its own, so a unit that kills its
    worker is known for sure and fails after dying alone more than
    `max_retries` times, while the others it took down just run again.
    """
    # spawn, never fork: a forked child inherits this process's threads' locks
    # (lmdb, logging, pykka) mid-state; a spawned one starts clean.
    ctx = multiprocessing.get_context("spawn")
    results: dict[int, UnitResult] = {}
    attempts = [0] * len(units)
    deaths = [0] * len(units)

    def finish(i: int, ok: bool, value: Any) -> None:
        results[i] = _result(units[i][0], ok, value, attempts[i])
        on_done(results[i])

    with ctx.Manager() as manager:
        started = manager.dict()  # unit index -> True once a worker took it
        shared = list(range(len(units)))
        while shared:
            broken = _pool_round(ctx, fn, units, shared, min(backend.workers, len(shared)), started, finish, attempts)
            shared = [i for i in broken if i not in started]
            for i in (i for i in broken if i in started):
                while i not in results:  # alone: a death now is this unit's own
                    started.pop(i, None)
                    if not _pool_round(ctx, fn, units, [i], 1, started, finish, attempts):
                        break
                    deaths[i] += 1
                    if deaths[i] > backend.max_retries:
                        finish(i, False, f"worker died ({deaths[i]} times running this unit alone)")
    return [results[i] for i in range(len(units))]


def _pool_round(
    ctx: Any,
    fn: Callable[[Any], Any],
    units: Sequence[tuple[str, Any]],
    todo: list[int],
    workers: int,
    started: Any,
    finish: Callable[[int, bool, Any], None],
    attempts: list[int],
) -> list[int]:
    """Run `todo` on one pool; finish() each unit that completes; return those the pool's breaking failed."""
    broken: list[int] = []
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(_tracked_call, started, i, fn, units[i][1]): i for i in todo}
        for future in cf.as_completed(futures):
            i = futures[future]
            try:
                ok, value = future.result()
            except BrokenProcessPool:
                broken.append(i)
                if i in started:
                    attempts[i] += 1
                continue
            except Exception as exc:  # e.g. a payload or result that does not pickle
                ok, value = False, f"{type(exc).__name__}: {exc}"
            attempts[i] += 1
            finish(i, ok, value)
    return sorted(broken)


def _tracked_call(started: Any, i: int, fn: Callable[[Any], Any], payload: Any) -> tuple[bool, Any]:
    started[i] = True
    return call(fn, payload)


def _ray_init(backend: Backend) -> Any:
    try:
        import ray
    except ImportError:
        raise WorkersError("--ray needs Ray: pip install -c constraints.txt -e '.[cluster]'") from None
    if ray.is_initialized():
        return ray
    address = backend.ray_address
    try:
        if address == "auto":
            try:
                ray.init(address="auto", log_to_driver=False)
            except ConnectionError:
                # No cluster running here: a local Ray for this run only.
                ray.init(num_cpus=backend.workers or None, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise WorkersError(f"--ray {address}: cannot connect: {str(exc).splitlines()[0]}") from None
    return ray


def _run_ray(
    fn: Callable[[Any], Any], units: Sequence[tuple[str, Any]], backend: Backend, on_done: Callable[[UnitResult], None]
) -> list[UnitResult]:
    ray = _ray_init(backend)
    from ray.exceptions import RayError

    try:
        return _ray_units(ray, fn, units, backend, on_done)
    except RayError as exc:  # not one unit's failure: the cluster itself (a dead head, a lost connection)
        raise ClusterLost(f"--ray: the Ray cluster failed: {type(exc).__name__}: {_first_line(exc)}") from None


def _ray_units(
    ray: Any,
    fn: Callable[[Any], Any],
    units: Sequence[tuple[str, Any]],
    backend: Backend,
    on_done: Callable[[UnitResult], None],
) -> list[UnitResult]:
    from ray.exceptions import RayError, WorkerCrashedError

    counter = ray.remote(num_cpus=0)(_Attempts).remote()
    # Ray reruns a task whose worker died (max_retries); the attempts actor counts the runs.
    task = ray.remote(max_retries=backend.max_retries, retry_exceptions=False)(_counted_call)
    refs = {task.remote(counter, key, fn, payload): i for i, (key, payload) in enumerate(units)}
    results: dict[int, UnitResult] = {}
    waiting = list(refs)
    try:
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1, timeout=RAY_WAIT_S)
            for ref in done:
                i = refs[ref]
                key = units[i][0]
                try:
                    ok, value = ray.get(ref)
                except WorkerCrashedError as exc:  # retries used up: the worker kept dying
                    ok, value = False, f"worker died ({type(exc).__name__}): {_first_line(exc)}"
                except RayError as exc:  # the task could not run (its function or payload did not load, ...)
                    ok, value = False, f"{type(exc).__name__}: {_first_line(exc)}"
                count = ray.get(counter.get.remote(key))
                results[i] = _result(key, ok, value, max(1, count))
                on_done(results[i])
    finally:
        try:
            ray.kill(counter)
        except RayError:
            pass  # the cluster is gone already; the error that matters is being raised
    return [results[i] for i in range(len(units))]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


class _Attempts:
    """A Ray actor: how many times each unit started (a retried task starts again)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def hit(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def get(self, key: str) -> int:
        return self.counts.get(key, 0)


def _counted_call(counter: Any, key: str, fn: Callable[[Any], Any], payload: Any) -> tuple[bool, Any]:
    import ray

    ray.get(counter.hit.remote(key), timeout=60)
    return call(fn, payload)


class Bar:
    """One progress line for a whole run (units done, failed, ETA) on a terminal; silent otherwise."""

    def __init__(self, total: int, stream: Any, label: str = "points") -> None:
        self.total, self.stream, self.label = total, stream, label
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.done = self.failed = 0
        self.started = time.monotonic()

    def update(self, result: UnitResult) -> None:
        self.done += 1
        self.failed += 0 if result.ok else 1
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        width = 30
        fill = round(width * self.done / self.total) if self.total else width
        failed = f", {self.failed} failed" if self.failed else ""
        self.stream.write(
            f"\r[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} {self.label}{failed}  "
            f"elapsed {_hms(elapsed)}  ETA {_hms(eta)} "
        )
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
