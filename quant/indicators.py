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
  first bar's true range being high - low.

Running sums drift in floating point, so windowed indicators recompute their
sums exactly once per window length: amortised O(1), drift bounded to one
window's worth of rounding.
"""

from __future__ import annotations

import math
from collections import deque


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
        if g is None:
            return None
        return _rsi_from(g, self._loss.peek(-d if d < 0.0 else 0.0))

    def update(self, x: float) -> float | None:
        x = float(x)
        if self._last is None:
            self._last = x
            return None
        d = x - self._last
        self._last = x
        g = self._gain.update(d if d > 0.0 else 0.0)
        l = self._loss.update(-d if d < 0.0 else 0.0)
        self.value = None if g is None else _rsi_from(g, l)
        return self.value


class MACDValue(tuple):
    """(macd, signal, hist) as a plain tuple with names."""

    __slots__ = ()

    def __new__(cls, macd: float, signal: float, hist: float) -> "MACDValue":
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


class BandsValue(tuple):
    """(upper, mid, lower, width) Bollinger bands; width = (upper-lower)/mid."""

    __slots__ = ()

    def __new__(cls, upper: float, mid: float, lower: float, width: float) -> "BandsValue":
        return tuple.__new__(cls, (upper, mid, lower, width))

    upper = property(lambda self: self[0])
    mid = property(lambda self: self[1])
    lower = property(lambda self: self[2])
    width = property(lambda self: self[3])


class Bollinger:
    """Bollinger bands from a sliding-window Welford mean and variance.

    The sliding update replaces the oldest value by the newest in one step
    (M2' = M2 + (new-old)(new - mean' + old - mean)), which keeps precision
    where a raw sum of squares would cancel catastrophically at price levels
    far above the band width.
    """

    __slots__ = ("n", "k", "ddof", "_buf", "_i", "_count", "_mean", "_m2", "value")

    def __init__(self, n: int = 20, k: float = 2.0, ddof: int = 0) -> None:
        self.n = _check_period(n)
        if ddof not in (0, 1) or n - ddof < 1:
            raise ValueError(f"Bollinger ddof must be 0 or 1 and below n, got {ddof!r}")
        self.k = float(k)
        self.ddof = ddof
        self._buf = [0.0] * n
        self._i = 0
        self._count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self.value: BandsValue | None = None

    @property
    def ready(self) -> bool:
        return self._count >= self.n

    def _next(self, x: float) -> tuple[float, float]:
        if self._count >= self.n:
            old = self._buf[self._i]
            mean = self._mean + (x - old) / self.n
            m2 = self._m2 + (x - old) * (x - mean + old - self._mean)
        else:
            delta = x - self._mean
            mean = self._mean + delta / (self._count + 1)
            m2 = self._m2 + delta * (x - mean)
        return mean, (m2 if m2 > 0.0 else 0.0)

    def _bands(self, mean: float, m2: float) -> BandsValue:
        half = self.k * math.sqrt(m2 / (self.n - self.ddof))
        upper, lower = mean + half, mean - half
        width = (upper - lower) / mean if mean != 0.0 else 0.0
        return BandsValue(upper, mean, lower, width)

    def peek(self, x: float) -> BandsValue | None:
        if self._count + 1 < self.n:
            return None
        return self._bands(*self._next(float(x)))

    def update(self, x: float) -> BandsValue | None:
        x = float(x)
        self._mean, self._m2 = self._next(x)
        self._buf[self._i] = x
        self._i += 1
        if self._i == self.n:
            self._i = 0
        self._count += 1
        self.value = self._bands(self._mean, self._m2) if self._count >= self.n else None
        if self._i == 0 and self._count >= self.n:
            # Once per window: exact two-pass recompute drops drift.
            mean = math.fsum(self._buf) / self.n
            self._mean = mean
            self._m2 = math.fsum((v - mean) * (v - mean) for v in self._buf)
        return self.value


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
