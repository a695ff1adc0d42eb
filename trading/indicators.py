"""Incremental technical indicators, O(1) per update.

Every indicator is a small class with:
- `update(x) -> float | None`: commit one observation, return the new value
  (None until the indicator is warm);
- `peek(x) -> float | None`: the value `update(x)` *would* return, without
  changing any state. Features use it to show "the indicator if the forming
  bar closed at this price" on every quote while only closed bars are
  committed;
- `ready`: True once `update` returns values;
- `value`: the last committed value (None until warm).

The definitions follow pandas so they can be checked against it:
- SMA: `rolling(n).mean()`;
- EMA: `ewm(span=n, adjust=False).mean()` (seeded with the first value),
  None for the first n-1 values;
- RSI: Wilder's smoothing as `ewm(alpha=1/n, adjust=False)` of gains and
  losses, ready after n price changes. Wilder's book seeds with an n-period
  SMA instead; the difference decays as (1-1/n)^k and is gone after a few n;
- MACD: EMA(fast) - EMA(slow), signal = EMA(signal) of that line, all seeded
  at the first value; ready after slow + signal - 1 values;
- Bollinger: `rolling(n).mean()` +/- k * `rolling(n).std(ddof=0)`
  (population std, as Bollinger defined it);
- volume ratio: `v / v.rolling(n).mean().shift(1)`: this bar's volume
  against the average of the n bars *before* it, so a spike does not dilute
  its own baseline;
- ATR: true range smoothed like RSI (`ewm(alpha=1/n, adjust=False)`), the
  first bar's true range being high - low;
- %B: `(x - lower) / (upper - lower)` of the Bollinger bands;
- rolling std: `rolling(n).std(ddof)`; volatility is that (ddof=1) of the
  one-bar log returns, `np.log(x / x.shift()).rolling(n).std()`, per bar;
- momentum (RateOfChange): `x / x.shift(n) - 1`;
- return window: the last n values of `np.log(x / x.shift())`.

Where pandas would answer 0/0 with NaN the value is neutral instead: RSI of
a flat window 50, %B of zero-width bands 0.5, volume ratio on a zero
baseline 0.

Seeding: EMA, MACD, RSI and ATR start their recursion at the first value
(pandas `adjust=False`) and only *report* once n values are in; nothing is
seeded with an SMA. The pandas references in the tests use exactly this.

Running sums drift in floating point, so windowed indicators recompute their
sums exactly once per window length: amortised O(1), drift bounded to one
window's worth of rounding. The rolling std also recomputes when its own
error bound says a step cancelled (see RollingMoments).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Generic, TypeVar


def _check_period(n: int, name: str = "period") -> int:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return n


class SMA:
    """Simple moving average over a ring buffer with a running sum."""

    __slots__ = ("n", "_buf", "_i", "_count", "_sum", "value")

    def __init__(self, n: int) -> None:
        self.n = _check_period(n)
        self._buf = [0.0] * n
        self._i = 0  # next slot to write == oldest value once full
        self._count = 0
        self._sum = 0.0
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self._count >= self.n

    def _next_sum(self, x: float) -> float:
        if self._count >= self.n:
            return self._sum - self._buf[self._i] + x
        return self._sum + x

    def peek(self, x: float) -> float | None:
        if self._count + 1 < self.n:
            return None
        return self._next_sum(x) / self.n

    def update(self, x: float) -> float | None:
        x = float(x)
        self._sum = self._next_sum(x)
        self._buf[self._i] = x
        self._i += 1
        if self._i == self.n:
            self._i = 0
        self._count += 1
        value = self._sum / self.n if self._count >= self.n else None
        if self._i == 0 and self._count >= self.n:
            # Once per window: drop accumulated rounding error.
            self._sum = math.fsum(self._buf)
        self.value = value
        return value


class EMA:
    """Exponential moving average, alpha = 2/(n+1), seeded with the first value."""

    __slots__ = ("n", "alpha", "_count", "_ema", "value")

    def __init__(self, n: int) -> None:
        self.n = _check_period(n)
        self.alpha = 2.0 / (n + 1.0)
        self._count = 0
        self._ema = 0.0
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self._count >= self.n

    def _next(self, x: float) -> float:
        if self._count == 0:
            return x
        return self._ema + self.alpha * (x - self._ema)

    def peek(self, x: float) -> float | None:
        if self._count + 1 < self.n:
            return None
        return self._next(float(x))

    def update(self, x: float) -> float | None:
        self._ema = self._next(float(x))
        self._count += 1
        self.value = self._ema if self._count >= self.n else None
        return self.value


class WilderAverage(EMA):
    """Wilder's smoothing: avg += (x - avg) / n, seeded with the first value.

    The EMA recursion with alpha = 1/n instead of 2/(n+1).
    """

    __slots__ = ()

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.alpha = 1.0 / self.n


def _rsi_from(avg_gain: float, avg_loss: float) -> float:
    total = avg_gain + avg_loss
    # A perfectly flat window has no direction: call it neutral.
    return 50.0 if total <= 0.0 else 100.0 * avg_gain / total


class RSI:
    """Relative strength index with Wilder's smoothing; ready after n changes."""

    __slots__ = ("n", "_last", "_gain", "_loss", "value")

    def __init__(self, n: int = 14) -> None:
        self.n = _check_period(n)
        self._last: float | None = None
        self._gain = WilderAverage(n)
        self._loss = WilderAverage(n)
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self._gain.ready

    def peek(self, x: float) -> float | None:
        if self._last is None:
            return None
        d = float(x) - self._last
        g = self._gain.peek(d if d > 0.0 else 0.0)
        l = self._loss.peek(-d if d < 0.0 else 0.0)
        if g is None or l is None:  # both averages warm up together
            return None
        return _rsi_from(g, l)

    def update(self, x: float) -> float | None:
        x = float(x)
        if self._last is None:
            self._last = x
            return None
        d = x - self._last
        self._last = x
        g = self._gain.update(d if d > 0.0 else 0.0)
        l = self._loss.update(-d if d < 0.0 else 0.0)
        self.value = None if g is None or l is None else _rsi_from(g, l)
        return self.value


class MACDValue(tuple[float, float, float]):
    """(macd, signal, hist) as a plain tuple with names."""

    __slots__ = ()

    def __new__(cls, macd: float, signal: float, hist: float) -> MACDValue:
        return tuple.__new__(cls, (macd, signal, hist))

    macd = property(lambda self: self[0])
    signal = property(lambda self: self[1])
    hist = property(lambda self: self[2])


class MACD:
    """MACD line, signal line and histogram."""

    __slots__ = ("fast_n", "slow_n", "signal_n", "_fast", "_slow", "_signal", "_count", "value")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        if fast >= slow:
            raise ValueError(f"MACD fast period {fast} must be shorter than slow {slow}")
        self.fast_n, self.slow_n, self.signal_n = fast, slow, signal
        # The inner EMAs run from the first value; warm-up is counted here.
        self._fast = EMA(fast)
        self._slow = EMA(slow)
        self._signal = EMA(signal)
        self._count = 0
        self.value: MACDValue | None = None

    @property
    def warmup(self) -> int:
        return self.slow_n + self.signal_n - 1

    @property
    def ready(self) -> bool:
        return self._count >= self.warmup

    def _line(self, fast: EMA, slow: EMA, x: float) -> float:
        return fast._next(x) - slow._next(x)

    def peek(self, x: float) -> MACDValue | None:
        if self._count + 1 < self.warmup:
            return None
        x = float(x)
        line = self._line(self._fast, self._slow, x)
        sig = self._signal._next(line)
        return MACDValue(line, sig, line - sig)

    def update(self, x: float) -> MACDValue | None:
        x = float(x)
        self._fast.update(x)
        self._slow.update(x)
        line = self._fast._ema - self._slow._ema
        self._signal.update(line)
        sig = self._signal._ema
        self._count += 1
        self.value = MACDValue(line, sig, line - sig) if self._count >= self.warmup else None
        return self.value


class BandsValue(tuple[float, float, float, float]):
    """(upper, mid, lower, width) Bollinger bands; width = (upper-lower)/mid."""

    __slots__ = ()

    def __new__(cls, upper: float, mid: float, lower: float, width: float) -> BandsValue:
        return tuple.__new__(cls, (upper, mid, lower, width))

    upper = property(lambda self: self[0])
    mid = property(lambda self: self[1])
    lower = property(lambda self: self[2])
    width = property(lambda self: self[3])


# Relative error of a rolling M2 tolerated before it is recomputed exactly.
_M2_TOLERANCE = 1e-11
_EPS = 2.0**-52


# What a rolling-moments indicator reports: a std (float) or bands.
V = TypeVar("V")


class RollingMoments(Generic[V]):
    """A sliding-window Welford mean and M2, reported by `_value` once ready.

    The sliding update replaces the oldest value by the newest in one step
    (M2' = M2 + (new-old)(new - mean' + old - mean)), which keeps precision
    where a raw sum of squares would cancel catastrophically at price levels
    far above the spread of the window. `ddof` 1 is pandas' default
    (`rolling(n).std()`), 0 the population std.

    The update still cancels when the spread collapses in one step (a gap
    leaving a window that is otherwise nearly flat): M2 falls from the gap's
    square to almost nothing and keeps only the gap's rounding. So each
    step adds a bound of its rounding error to a running budget, and when
    the budget passes `_M2_TOLERANCE` of M2 the window is recomputed exactly
    (two-pass, O(n), rare: it takes a ~1e5-fold drop in variance). Once per
    window length the state is recomputed exactly anyway, which also resets
    the budget: amortised O(1).

    A window of n equal values has exactly zero spread; the sliding update
    alone would leave a residue, and a flat market must not show phantom bands.
    """

    __slots__ = ("n", "ddof", "_buf", "_i", "_count", "_mean", "_m2", "_err", "_last", "_run", "value")

    def __init__(self, n: int, ddof: int = 1) -> None:
        self.n = _check_period(n)
        if ddof not in (0, 1) or n - ddof < 1:
            raise ValueError(f"ddof must be 0 or 1 and below the period, got {ddof!r} for period {n}")
        self.ddof = ddof
        self._buf = [0.0] * n
        self._i = 0
        self._count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._err = 0.0  # bound on the rounding error in _m2
        self._last = math.nan  # equal to nothing
        self._run = 0  # how many of the latest values equal _last
        self.value: V | None = None

    @property
    def ready(self) -> bool:
        return self._count >= self.n

    def _next(self, x: float) -> tuple[float, float, float]:
        """(mean, M2, error bound of M2) with x added (and the oldest dropped once full)."""
        n = self.n
        if x == self._last and self._run >= n - 1:
            return x, 0.0, 0.0
        mean0, m20 = self._mean, self._m2
        if self._count >= n:
            old = self._buf[self._i]
            step = x - old
            mean = mean0 + step / n
            term = step * (x - mean + old - mean0)
            m2 = m20 + term
            # rounding of this step: of M2 and the term, and of the means the term is built on
            err = self._err + _EPS * (m20 + abs(term) + abs(step) * (abs(x) + abs(old) + 2.0 * abs(mean0)))
            if err > _M2_TOLERANCE * m2:
                return self._exact(x)
        else:
            delta = x - mean0
            mean = mean0 + delta / (self._count + 1)
            m2 = m20 + delta * (x - mean)  # only adds: no cancellation
            err = self._err + _EPS * (m2 + abs(delta) * abs(mean))
        return mean, m2, err

    def _exact(self, x: float) -> tuple[float, float, float]:
        """Two-pass mean and M2 of the window with x in the oldest value's slot."""
        vals = self._buf.copy()
        vals[self._i] = x
        mean = math.fsum(vals) / self.n
        return mean, math.fsum((v - mean) * (v - mean) for v in vals), 0.0

    def _value(self, mean: float, m2: float) -> V:
        raise NotImplementedError

    def peek(self, x: float) -> V | None:
        if self._count + 1 < self.n:
            return None
        mean, m2, _ = self._next(float(x))
        return self._value(mean, m2)

    def update(self, x: float) -> V | None:
        x = float(x)
        self._mean, self._m2, self._err = self._next(x)
        if x == self._last:
            self._run += 1
        else:
            self._last, self._run = x, 1
        self._buf[self._i] = x
        self._i += 1
        if self._i == self.n:
            self._i = 0
        self._count += 1
        self.value = self._value(self._mean, self._m2) if self._count >= self.n else None
        if self._i == 0 and self._count >= self.n:
            # Once per window: exact recompute drops drift and resets the error budget.
            self._mean, self._m2, self._err = self._exact(self._buf[self._i])  # same window
        return self.value


class RollingStd(RollingMoments[float]):
    """Rolling standard deviation (see RollingMoments for how it stays exact)."""

    __slots__ = ()

    def _value(self, mean: float, m2: float) -> float:
        return math.sqrt(m2 / (self.n - self.ddof)) if m2 > 0.0 else 0.0


class Bollinger(RollingMoments[BandsValue]):
    """Bollinger bands: rolling mean +/- k population std (see RollingMoments)."""

    __slots__ = ("k",)

    def __init__(self, n: int = 20, k: float = 2.0, ddof: int = 0) -> None:
        super().__init__(n, ddof)
        self.k = float(k)

    def _value(self, mean: float, m2: float) -> BandsValue:
        half = self.k * math.sqrt(m2 / (self.n - self.ddof)) if m2 > 0.0 else 0.0
        upper, lower = mean + half, mean - half
        width = (upper - lower) / mean if mean != 0.0 else 0.0
        return BandsValue(upper, mean, lower, width)


def percent_b(price: float, bands: BandsValue) -> float:
    """Bollinger %B: 0 at the lower band, 1 at the upper, 0.5 at the mean.

    A window with no variance has no bands to be outside of; it is called
    0.5 (neutral) rather than pandas' NaN/inf from 0/0.
    """
    upper, _mid, lower, _width = bands
    span = upper - lower
    return (price - lower) / span if span > 0.0 else 0.5


class VolumeRatio:
    """This bar's volume / mean volume of the previous n bars."""

    __slots__ = ("n", "_avg", "value")

    def __init__(self, n: int = 20) -> None:
        self.n = _check_period(n)
        self._avg = SMA(n)
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self._avg.ready

    @staticmethod
    def _ratio(v: float, avg: float) -> float:
        # No baseline volume means no evidence either way: report 0, not inf.
        return v / avg if avg > 0.0 else 0.0

    def peek(self, v: float) -> float | None:
        avg = self._avg.value
        return None if avg is None else self._ratio(float(v), avg)

    def update(self, v: float) -> float | None:
        v = float(v)
        avg = self._avg.value
        self.value = None if avg is None else self._ratio(v, avg)
        self._avg.update(v)
        return self.value

    def reset(self) -> None:
        """Forget the baseline (e.g. when bar volume changes unit)."""
        self._avg = SMA(self.n)
        self.value = None


class ATR:
    """Average true range from bars, Wilder-smoothed."""

    __slots__ = ("n", "_prev_close", "_avg", "value")

    def __init__(self, n: int = 14) -> None:
        self.n = _check_period(n)
        self._prev_close: float | None = None
        self._avg = WilderAverage(n)
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self._avg.ready

    def true_range(self, high: float, low: float) -> float:
        pc = self._prev_close
        if pc is None:
            return high - low
        return max(high - low, abs(high - pc), abs(low - pc))

    def peek(self, high: float, low: float, close: float) -> float | None:
        return self._avg.peek(self.true_range(float(high), float(low)))

    def update(self, high: float, low: float, close: float) -> float | None:
        self.value = self._avg.update(self.true_range(float(high), float(low)))
        self._prev_close = float(close)
        return self.value


class RollingExtreme:
    """Rolling max (or min) over n values: monotonic deque, amortised O(1)."""

    __slots__ = ("n", "_is_max", "_q", "_count", "value")

    def __init__(self, n: int, kind: str = "max") -> None:
        self.n = _check_period(n)
        if kind not in ("max", "min"):
            raise ValueError(f"kind must be 'max' or 'min', got {kind!r}")
        self._is_max = kind == "max"
        self._q: deque[tuple[int, float]] = deque()
        self._count = 0
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self._count >= self.n

    def update(self, x: float) -> float | None:
        x = float(x)
        q = self._q
        if self._is_max:
            while q and q[-1][1] <= x:
                q.pop()
        else:
            while q and q[-1][1] >= x:
                q.pop()
        q.append((self._count, x))
        self._count += 1
        while q[0][0] < self._count - self.n:
            q.popleft()
        self.value = q[0][1] if self._count >= self.n else None
        return self.value


def _log_return(x: float, prev: float) -> float:
    # Prices reaching here are positive (features drop non-positive bars and quotes).
    return math.log(x / prev)


class Volatility(RollingStd):
    """Rolling sample std (ddof=1) of one-bar log returns over n returns.

    Per bar, not annualised. Ready after n + 1 closes, like pandas'
    `np.log(c / c.shift()).rolling(n).std()`. Takes closes; the returns go
    through RollingStd.
    """

    __slots__ = ("_prev",)

    def __init__(self, n: int = 20) -> None:
        if isinstance(n, int) and n < 2:
            raise ValueError(f"volatility period must be at least 2, got {n!r}")
        super().__init__(n, ddof=1)
        self._prev: float | None = None

    def peek(self, x: float) -> float | None:
        prev = self._prev
        if prev is None or self._count + 1 < self.n:
            return None
        mean, m2, _ = self._next(_log_return(float(x), prev))
        return self._value(mean, m2)

    def update(self, x: float) -> float | None:
        x = float(x)
        prev, self._prev = self._prev, x
        return self.value if prev is None else super().update(_log_return(x, prev))


class RateOfChange:
    """Momentum as rate of change over n values: x / x[n values ago] - 1, from a ring buffer.

    pandas: `s / s.shift(n) - 1` (`pct_change(n)`); ready after n + 1 values.
    """

    __slots__ = ("n", "_buf", "_i", "_count", "value")

    def __init__(self, n: int) -> None:
        self.n = _check_period(n)
        self._buf = [0.0] * n  # the last n values; _buf[_i] is the one n back
        self._i = 0
        self._count = 0
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self._count > self.n

    def peek(self, x: float) -> float | None:
        if self._count < self.n:
            return None
        return float(x) / self._buf[self._i] - 1.0

    def update(self, x: float) -> float | None:
        x = float(x)
        self.value = self.peek(x)
        self._buf[self._i] = x
        self._i += 1
        if self._i == self.n:
            self._i = 0
        self._count += 1
        return self.value


class ReturnWindow:
    """The last n one-bar log returns, oldest first; () until n are known.

    pandas: the rows of `np.log(x / x.shift())` from i-n+1 to i. A value is a
    tuple (snapshots share it); the n-1 committed returns a peek reuses are
    kept as a tuple, rebuilt once per bar, so a peek is one tuple concatenation.
    """

    __slots__ = ("n", "_last", "_buf", "_tail", "value")

    def __init__(self, n: int = 10) -> None:
        self.n = _check_period(n)
        self._last: float | None = None
        self._buf: deque[float] = deque(maxlen=n)
        self._tail: tuple[float, ...] | None = None  # the last n-1 returns, once known
        self.value: tuple[float, ...] = ()

    @property
    def ready(self) -> bool:
        return len(self._buf) == self.n

    def peek(self, x: float) -> tuple[float, ...]:
        tail, last = self._tail, self._last
        if tail is None or last is None:
            return ()
        return (*tail, _log_return(float(x), last))

    def update(self, x: float) -> tuple[float, ...]:
        x = float(x)
        if self._last is not None:
            buf = self._buf
            buf.append(_log_return(x, self._last))
            known = len(buf)
            if known >= self.n - 1:
                full = tuple(buf)
                self._tail = full[known - (self.n - 1) :]
                if known == self.n:
                    self.value = full
        elif self.n == 1:
            self._tail = ()  # one return needs only this close
        self._last = x
        return self.value
