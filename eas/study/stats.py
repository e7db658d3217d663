"""Paired comparisons of two methods scored on the same test items, and verdicts that say what a budget can tell.

Two methods evaluated on the same questions are not two independent samples: most items are right (or
wrong) for both, and only the *discordant* items (right for one method, wrong for the other) carry
information about the difference. Everything here works on per-item 0/1 correctness aligned by item id,
and reports differences in percentage points.

    paired = pair_by_item(runs_a, runs_b)         # runs (DataFrames with uid/correct, or Series by id), checked
    cmp = paired_comparison(a, b)                 # one run each: 0/1 vectors, same items, same order
    cmp = paired_comparison(a, b, seed_sd=2.0)    # ... widened by a training-seed spread measured elsewhere
    cmp = seeds_comparison(A, B)                  # several training seeds: arrays (seeds, items)
    cmp.verdict("better")                         # "holds" | "does not hold" | "cannot tell, ..."
    cmp.verdict("no_worse", margin=2.0)           # "A is at most 2 points worse than B"
    correct_family(rows, family="02_redundancy")  # Holm over a chapter's verdicts: adjusted p and verdicts
    select_then_compare("bandit", runs)           # pick the best rival on one half of the items, compare on the other

The choices, stated once:

* **Pairing** (`pair_by_item`): runs are joined on their item ids, never on row order. An id listed twice
  in a run is an error that names the ids (joining would cross-pair them). Items missing from some run
  are an error by default, naming how many and the first few ids: every run of a comparison is meant
  to score the same test split, so a mismatch is a bug upstream (a different `n_eval`, a crashed
  evaluation), and silently intersecting would hide it. `missing="drop"` pairs on the shared items
  instead and reports what it dropped (`PairedItems.note`). An empty or NaN correctness cell is an
  error naming the ids (a NaN cast to bool would count as correct); so is any value other than 0/1,
  booleans or their spellings "True"/"False".
* **Interval, one seed each** (`tango_interval`): Tango's (1998) score interval for the difference of
  paired proportions, the set of differences D that the score test of "p10 - p01 = D" does not reject.
  Why this one: it depends only on the two discordant counts and n, so it stays honest with few
  discordant items (4 vs 0 of 200 gives [+0.1, +5.0] points, zero vs zero about +/-1.9 points, never
  the zero-width interval a percentile bootstrap gives), its test at D = 0 is exactly the
  (asymptotic) McNemar test, and it is one of the intervals for a paired difference that Fagerland,
  Lydersen & Laake (Stat. Med. 2014) recommend for coverage close to nominal (the simulations in
  tests/test_stats.py measure 0.93-0.95, down to 4 and 1 expected discordant items of 200). The
  percentile bootstrap it replaces (`paired_bootstrap_ci`, kept for reference) collapses onto the
  observed discordant items when they are few (4 vs 0 of 200: [+0.5, +4.0], "holds" beside an exact
  p of 0.125).
  The exact conditional interval (Clopper-Pearson on the discordant binomial, scaled by the observed
  discordance) would agree with the exact test by construction but treats the discordance rate as known,
  so it is too narrow when the effect is large; it is not used.
* **p-value, one seed each** (`mcnemar_exact`): the exact two-sided McNemar test, a binomial test of the
  discordant counts against 1/2, p = min(1, 2 P[X <= min(n10, n01)]), X ~ Bin(n10 + n01, 1/2), in exact
  integer arithmetic. It is more conservative than the score test behind the interval when discordant
  items are few, so the two can disagree (4 vs 0 of 200: the score interval excludes 0, p = 0.125).
  **A "better" verdict therefore needs both**: the interval on the right side of 0 and p < alpha.
  The sentence then says "cannot tell" and why; it never says "holds" (or "does not hold") with
  p >= alpha. A "no_worse" verdict is a test at the margin, read from the interval alone.
* **Training-seed noise, one seed each.** With one training run per method the interval covers item
  noise only: it speaks of these two trained models, not of the methods, and every sentence built by
  `describe` says so. Given a seed spread measured elsewhere (`seed_sd`: the standard deviation, in
  points, of one method's accuracy across training seeds on the same items, e.g. `seed_sd_a` of the
  chapter's headline pair; a pair gives A's and B's separately), the interval is widened by it: the seed
  part of the difference has SE s = sqrt(sd_a^2 + sd_b^2) (two independent trainings), and each end of the
  item interval is moved out as its one-sided SE and s add in quadrature,
  low = d - z sqrt(se_low^2 + s^2) with se_low = (d - low_items) / z, likewise the high end (a MOVER
  combination; z for the interval's level). The p-value becomes the larger of the exact McNemar p and the
  normal p of that widened interval, so the verdict stays consistent with it. The spread is taken as
  known (its own uncertainty is not propagated), and a measured spread of per-seed accuracies also holds
  some per-item noise the item interval already counts, so the widening errs on the wide side.
* **Interval with seeds** (`seeds_comparison`, 2+ seeds on a side): a t interval over the seed means.
  The difference is mean over A's seeds of their accuracy minus the same for B (seed s of A and seed s of
  B are different trainings, not a pair). Its variance is the seed part, Welch's sd_a^2/S_a + sd_b^2/S_b
  from the per-seed accuracies (reported), plus the item part that the seed spread cannot show (every
  seed scores the same items): the variance across items of the seed-averaged per-item difference,
  less the within-item seed variance already in the seed part, over n, floored at 0 (a method-of-moments
  split of the crossed items x seeds design). Degrees of freedom by Welch-Satterthwaite (the item part
  counts n - 1), so with 3 seeds each the quantile is near 2.8, not 1.96. A side with a single seed
  borrows its seed variance from `seed_sd` when given, else from the other side (equal spreads assumed,
  said in `noise`). The p-value is the t test of 0, so interval and test agree by construction. This
  replaces the two-level bootstrap (`two_level_bootstrap_ci`, kept for reference), which with three seeds
  undercovers when seeds matter (0.91 at a 4-point seed spread) because a bootstrap of three values
  underestimates their variance.
* **Smallest detectable difference** (`min_detectable_difference`): (c_{1-alpha/2} + c_power) * SE, the true
  difference a two-sided level-alpha test detects with the given power (80% by default); c are normal
  quantiles, or t quantiles with the interval's degrees of freedom over seeds. One seed each:
  SE = sqrt(q / n) with q the discordance rate (floored at one discordant item), combined with the seed SE
  s when `seed_sd` is given. Over seeds: the t interval's SE (floored at one discordant item).
* **Verdicts** (`verdict`): "A better than B" holds if the whole interval is above 0 and does not hold if
  it lies at or below 0, each only if p < alpha as well; "A no worse than B by more than m" holds if the
  interval's lower end is above -m and does not hold if its upper end is below -m. Anything else is
  "cannot tell" with the interval (and the p-value where that is what stopped it). NaN ends raise.
* **p of a claim** (`Comparison.claim_p`): the p-value of the test the verdict performs, at the claim's
  boundary (0, or -margin), two-sided, so that "decisive iff p < alpha": one seed, the score test at the
  boundary (the larger of it and the exact McNemar p for "better"), or the normal p of the seed-widened
  interval; seeds, the t test at the boundary. This is what a multiplicity correction adjusts.
* **Multiplicity** (`holm`, `correct_family`): a chapter's verdicts are one family; Holm's step-down
  adjustment of their claim p-values keeps the chance of any false decisive verdict in the family at or
  below alpha under any dependence between the comparisons (they share items and runs). A verdict stays
  decisive only if its adjusted p is below alpha, else it becomes "cannot tell after Holm over N ...".
  Headline (pre-registered) claims are flagged in the same family, not tested apart: the correction
  covers them too, so a headline verdict never rides on an uncorrected level.
* **Selection** (`split_items`, `select_then_compare`): a rival picked as the best of several on the
  same items it is then compared on is flattered (with five equal rivals and 500 items, "A better: does
  not hold" comes out 8-10% of the time where 2.5% is meant). Items are split by a seeded hash of their
  id (stable whatever other items exist, so every run and chapter splits alike) into a selection half,
  where the best rival is picked, and a comparison half, where A is compared with it on items the choice
  never saw. The price is half the items, so intervals are ~sqrt(2) wider.
* **Compatibility.** `paired_comparison` and `seeds_comparison` keep their `n_boot` and `seed` arguments
  (eas.study.experiments passes them) and still reject n_boot < 1, but draw no bootstrap; the bootstrap
  functions remain for reference and comparison.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

CLAIMS = ("better", "no_worse")
DEFAULT_BOOT = 10_000
CANNOT_TELL = "cannot tell"


class StatsError(ValueError):
    pass


# ----------------------------------------------------------------------------- inputs

def _vector(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.size == 0:
        raise StatsError(f"{name} must be a non-empty 1-d vector of per-item 0/1 correctness, got shape {arr.shape}.")
    return _binary(arr, name)


def _binary(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise StatsError(f"{name} holds {int(np.isnan(arr).sum())} NaN (empty) correctness values; score every item.")
    if arr.dtype.kind not in "biuf" or not np.isin(arr, (0, 1)).all():
        raise StatsError(f"{name} must hold 0/1 (or booleans) only.")
    return arr.astype(np.int8)


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _vector(a, "a"), _vector(b, "b")
    if a.shape != b.shape:
        raise StatsError(f"a and b must score the same items: {a.size} vs {b.size} items.")
    return a, b


def _seeds(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.size == 0:
        raise StatsError(f"{name} must be an array (seeds, items) of 0/1, got shape {arr.shape}.")
    return _binary(arr, name)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise StatsError(f"level must be in (0, 1), got {level!r}.")


def _check_alpha_power(alpha: float, power: float) -> None:
    if not 0 < power < 1 or not 0 < alpha < 1:
        raise StatsError(f"alpha and power must be in (0, 1), got {alpha!r}, {power!r}.")


def _check_boot(n_boot) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise StatsError(f"n_boot must be an integer >= 1, got {n_boot!r}.")


def _seed_sds(seed_sd) -> tuple[float, float] | None:
    """`seed_sd` (one spread for both methods, or (sd_a, sd_b)) as a pair of finite non-negative floats."""
    if seed_sd is None:
        return None
    pair = tuple(seed_sd) if isinstance(seed_sd, (tuple, list)) else (seed_sd, seed_sd)
    if len(pair) != 2:
        raise StatsError(f"seed_sd must be one number or a pair (sd_a, sd_b), got {seed_sd!r}.")
    out = []
    for v in pair:
        v = float(v)
        if not math.isfinite(v) or v < 0:
            raise StatsError(f"seed_sd must be finite and >= 0 points, got {seed_sd!r}.")
        out.append(v)
    return out[0], out[1]


def _z(p: float) -> float:
    return NormalDist().inv_cdf(p)


def _normal_p(z: float) -> float:
    """Two-sided normal p-value of |z| (accurate in the far tail)."""
    return math.erfc(abs(z) / math.sqrt(2.0))


# ----------------------------------------------------------------------------- Student's t, without scipy

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P[T > t] for Student's t with `df` degrees of freedom (df = inf: the normal)."""
    if not df > 0:
        raise StatsError(f"degrees of freedom must be > 0, got {df!r}.")
    if math.isinf(df) or df > 1e7:
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    if t < 0:
        return 1.0 - t_sf(-t, df)
    return 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))


def t_ppf(q: float, df: float) -> float:
    """The q quantile of Student's t with `df` degrees of freedom."""
    if not 0 < q < 1:
        raise StatsError(f"quantile must be in (0, 1), got {q!r}.")
    if math.isinf(df) or df > 1e7:
        return _z(q)
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    if q == 0.5:
        return 0.0
    target = 1.0 - q
    lo, hi = 0.0, max(1.0, _z(q))
    while t_sf(hi, df) > target:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):  # bisection: t_sf is monotone; 200 halvings reach float precision from any bracket
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------- one seed per method

def discordant(a, b) -> tuple[int, int]:
    """(items only A gets right, items only B gets right)."""
    a, b = _pair(a, b)
    return int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts (binomial test against 1/2)."""
    if a_only < 0 or b_only < 0:
        raise StatsError(f"discordant counts must be >= 0, got {a_only}, {b_only}.")
    a_only, b_only = int(a_only), int(b_only)
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def _tango_z(b, c, n, delta):
    """Tango's score statistic for H0: p10 - p01 = delta, from the discordant counts b (A only), c (B only)."""
    b, c, n, delta = (np.asarray(v, dtype=float) for v in (b, c, n, delta))
    qa = 2.0 * n
    qb = -b - c + (2.0 * n - b + c) * delta
    qc = -c * delta * (1.0 - delta)
    p01 = (-qb + np.sqrt(np.maximum(qb * qb - 4.0 * qa * qc, 0.0))) / (2.0 * qa)  # restricted MLE of p01
    var = n * (2.0 * p01 + delta * (1.0 - delta))
    num = b - c - n * delta
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 1e-300, num / np.sqrt(np.maximum(var, 1e-300)), np.sign(num) * np.inf)
    return z


def _tango_z1(b: float, c: float, n: float, delta: float) -> float:
    """`_tango_z` for scalars, in plain floats (fast inside a bisection)."""
    qa = 2.0 * n
    qb = -b - c + (2.0 * n - b + c) * delta
    qc = -c * delta * (1.0 - delta)
    p01 = (-qb + math.sqrt(max(qb * qb - 4.0 * qa * qc, 0.0))) / (2.0 * qa)
    var = n * (2.0 * p01 + delta * (1.0 - delta))
    num = b - c - n * delta
    if var > 1e-300:
        return num / math.sqrt(var)
    return math.copysign(math.inf, num) if num else 0.0


def tango_interval(a_only, b_only, n, *, level: float = 0.95) -> tuple:
    """Tango's score interval (points) for the paired difference p10 - p01, from the discordant counts
    (A right and B wrong, the reverse) among n items. Vectorised: array arguments give arrays."""
    _check_level(level)
    b, c, n = (np.asarray(v, dtype=float) for v in (a_only, b_only, n))
    if (n <= 0).any() or (b < 0).any() or (c < 0).any() or (b + c > n).any():
        raise StatsError(f"need 0 <= discordant counts, their sum <= n and n > 0; got {a_only}, {b_only}, {n}.")
    zc = _z(0.5 + level / 2)
    if b.ndim == c.ndim == n.ndim == 0:
        b, c, n = float(b), float(c), float(n)
        d = (b - c) / n
        lo_a, lo_b, up_a, up_b = -1.0, d, d, 1.0
        for _ in range(60):
            mid = 0.5 * (lo_a + lo_b)
            if _tango_z1(b, c, n, mid) > zc:
                lo_a = mid
            else:
                lo_b = mid
            mid = 0.5 * (up_a + up_b)
            if _tango_z1(b, c, n, mid) < -zc:
                up_b = mid
            else:
                up_a = mid
        return 100.0 * lo_b, 100.0 * up_a
    d = (b - c) / n
    lo_a, lo_b = np.full_like(d, -1.0), d.copy()   # lower limit: z(delta) = +zc on [-1, d]
    up_a, up_b = d.copy(), np.full_like(d, 1.0)    # upper limit: z(delta) = -zc on [d, 1]
    for _ in range(60):
        mid = 0.5 * (lo_a + lo_b)
        high = _tango_z(b, c, n, mid) > zc
        lo_a, lo_b = np.where(high, mid, lo_a), np.where(high, lo_b, mid)
        mid = 0.5 * (up_a + up_b)
        low = _tango_z(b, c, n, mid) < -zc
        up_a, up_b = np.where(low, up_a, mid), np.where(low, mid, up_b)
    lo, hi = 100.0 * lo_b, 100.0 * up_a
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def tango_p(a_only: int, b_only: int, n: int, boundary: float = 0.0) -> float:
    """Two-sided p of Tango's score test of "A - B = boundary points" (boundary 0: the asymptotic McNemar test)."""
    z = _tango_z1(float(a_only), float(b_only), float(n), boundary / 100.0)
    return 0.0 if math.isinf(z) else _normal_p(z)


def paired_bootstrap_ci(a, b, *, n_boot: int = DEFAULT_BOOT, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile interval (points) of mean(a) - mean(b) under resampling items with replacement.
    Kept for reference; verdicts use `tango_interval` (see the module docstring)."""
    _check_level(level)
    _check_boot(n_boot)
    a, b = _pair(a, b)
    return _percentile(_paired_replicates(a, b, n_boot, seed), level)


def _paired_replicates(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    _check_boot(n_boot)
    n = a.size
    a_only, b_only = discordant(a, b)
    probs = np.array([a_only, b_only, n - a_only - b_only], dtype=float) / n
    counts = np.random.default_rng(seed).multinomial(n, probs, size=n_boot)
    return 100.0 * (counts[:, 0] - counts[:, 1]) / n


def _percentile(replicates: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(replicates, [tail, 100 - tail])
    return float(lo), float(hi)


def min_detectable_difference(se: float, *, alpha: float = 0.05, power: float = 0.8, df: float = math.inf) -> float:
    """The true difference (same units as `se`) a two-sided level-alpha test detects with `power`
    (normal quantiles, or t quantiles with `df` degrees of freedom)."""
    _check_alpha_power(alpha, power)
    return (t_ppf(1 - alpha / 2, df) + t_ppf(power, df)) * se


def paired_se(discordance: float, n: int) -> float:
    """SE (points) of a paired accuracy difference on n items when the methods are equal: sqrt(q / n),
    q the discordance rate, floored at one discordant item."""
    return 100.0 * math.sqrt(max(discordance, 1.0 / n) / n)


# ----------------------------------------------------------------------------- the result

@dataclass(frozen=True)
class Comparison:
    """A - B on the same items, in percentage points."""

    n_items: int
    seeds_a: int
    seeds_b: int
    acc_a: float                 # mean accuracy over seeds
    acc_b: float
    diff: float                  # acc_a - acc_b
    ci_low: float
    ci_high: float
    level: float
    p: float                     # test of "no difference": exact McNemar (one seed each; the larger of it and
    p_kind: str                  # the widened interval's p with seed_sd) or the t test over seed means
    a_only: float                # discordant items, A right and B wrong (mean over seed pairs)
    b_only: float
    discordance: float           # share of discordant items
    mdd: float                   # smallest difference detectable at `power` (see the module docstring)
    power: float
    interval: str                # how the interval was computed
    acc_a_seeds: tuple = field(default=())
    acc_b_seeds: tuple = field(default=())
    seed_sd_a: float = math.nan  # standard deviation of the per-seed accuracies (ddof 1; NaN with one seed)
    seed_sd_b: float = math.nan
    alpha: float = 0.05
    noise: str = "items only"    # what the interval covers
    assumed_sd: tuple = field(default=())  # (sd_a, sd_b) points: a seed spread measured elsewhere, if used
    p_exact: float = math.nan    # exact McNemar p (one seed each)
    se_low: float = math.nan     # one-sided SEs (points) behind the interval's ends
    se_high: float = math.nan
    df: float = math.nan         # t degrees of freedom (seeds)
    counts: tuple = field(default=())  # (both right, A only, B only, both wrong), one seed each

    @property
    def one_seed(self) -> bool:
        return self.seeds_a == 1 and self.seeds_b == 1

    def claim_p(self, claim: str = "better", margin: float = 0.0) -> float:
        """Two-sided p of the test the verdict on `claim` performs, at its boundary (0 for "better", -margin
        for "no_worse"): a decisive verdict is one with claim_p < alpha. What `holm` adjusts."""
        boundary = _boundary(claim, margin)
        d = self.diff
        if not self.one_seed:
            if self.se_low == 0:
                return 1.0 if d == boundary else 0.0
            return min(1.0, 2.0 * t_sf(abs(d - boundary) / self.se_low, self.df))
        n11, n10, n01, n00 = self.counts
        n = n11 + n10 + n01 + n00
        if self.assumed_sd:  # the widened interval's ends are d -/+ z * se_low / se_high (seed SE included)
            se = self.se_low if boundary < d else self.se_high
            p = 1.0 if d == boundary else (0.0 if se == 0 else _normal_p((d - boundary) / se))
        else:
            p = tango_p(n10, n01, n, boundary)
        return max(p, self.p_exact) if claim == "better" else p

    def verdict(self, claim: str = "better", margin: float = 0.0) -> str:
        exact = not self.one_seed and self.se_low == 0  # a zero-width interval over seeds: nothing to test
        return verdict(self.ci_low, self.ci_high, claim=claim, margin=margin,
                       p=None if claim != "better" or exact else self.p, alpha=self.alpha)

    def to_row(self, claim: str = "better", margin: float = 0.0) -> dict:
        row = asdict(self)
        row["acc_a_seeds"] = list(self.acc_a_seeds)
        row["acc_b_seeds"] = list(self.acc_b_seeds)
        row["assumed_sd"] = list(self.assumed_sd)
        row["counts"] = list(self.counts)
        row["claim"] = claim if claim == "better" else f"no worse by more than {margin:g}"
        row["claim_kind"], row["margin"] = claim, float(margin)
        row["p_claim"] = self.claim_p(claim, margin)
        row["verdict"] = self.verdict(claim, margin)
        return row


def _boundary(claim: str, margin: float) -> float:
    if claim not in CLAIMS:
        raise StatsError(f"unknown claim {claim!r}; expected one of {', '.join(CLAIMS)}.")
    if not math.isfinite(margin) or margin < 0:
        raise StatsError(f"margin must be >= 0 points, got {margin!r}.")
    if claim == "better" and margin:
        raise StatsError("claim 'better' takes no margin (use claim='no_worse').")
    return 0.0 if claim == "better" else -float(margin)


def paired_comparison(a, b, *, n_boot: int = DEFAULT_BOOT, level: float = 0.95, seed: int = 0,
                      alpha: float = 0.05, power: float = 0.8, seed_sd=None) -> Comparison:
    """A against B, one run each, on the same items (0/1 vectors in the same item order; see `pair_by_item`).

    The interval is Tango's score interval over items; `seed_sd` (points: one method's accuracy spread over
    training seeds, measured elsewhere; or (sd_a, sd_b)) widens it by the seed noise. `n_boot` and `seed` are
    accepted for compatibility (no bootstrap is drawn) and still checked."""
    _check_level(level)
    _check_alpha_power(alpha, power)
    _check_boot(n_boot)
    sds = _seed_sds(seed_sd)
    a, b = _pair(a, b)
    n = a.size
    a_only, b_only = discordant(a, b)
    both = int(((a == 1) & (b == 1)).sum())
    counts = (both, a_only, b_only, n - both - a_only - b_only)
    acc_a, acc_b = 100.0 * float(a.mean()), 100.0 * float(b.mean())
    d = acc_a - acc_b
    q = (a_only + b_only) / n
    zc = _z(0.5 + level / 2)
    lo, hi = tango_interval(a_only, b_only, n, level=level)
    se_lo, se_hi = (d - lo) / zc, (hi - d) / zc
    p_exact = mcnemar_exact(a_only, b_only)
    p, p_kind = p_exact, "exact McNemar"
    se_mdd = paired_se(q, n)
    noise, interval = "items only", "Tango score interval over items"
    if sds is not None:
        s2 = sds[0] ** 2 + sds[1] ** 2
        se_lo, se_hi = math.sqrt(se_lo ** 2 + s2), math.sqrt(se_hi ** 2 + s2)
        lo, hi = d - zc * se_lo, d + zc * se_hi
        se = se_lo if d > 0 else se_hi
        p_seed = 1.0 if d == 0 else (0.0 if se == 0 else _normal_p(d / se))
        p = max(p_exact, p_seed)
        p_kind = "the larger of exact McNemar and the seed-widened interval's p"
        se_mdd = math.sqrt(se_mdd ** 2 + s2)
        noise = f"items and training seeds (seed spread {_fmt_sds(sds)} points assumed, measured elsewhere)"
        interval = "Tango score interval over items, widened by the assumed seed spread"
    return Comparison(n_items=n, seeds_a=1, seeds_b=1, acc_a=acc_a, acc_b=acc_b, diff=d, ci_low=float(lo),
                      ci_high=float(hi), level=level, p=p, p_kind=p_kind, a_only=a_only, b_only=b_only,
                      discordance=q, mdd=min_detectable_difference(se_mdd, alpha=alpha, power=power),
                      power=power, interval=interval, acc_a_seeds=(acc_a,), acc_b_seeds=(acc_b,), alpha=alpha,
                      noise=noise, assumed_sd=sds if sds is not None else (), p_exact=p_exact,
                      se_low=float(se_lo), se_high=float(se_hi), counts=counts)


def _fmt_sds(sds) -> str:
    return f"{sds[0]:.1f}" if sds[0] == sds[1] else f"{sds[0]:.1f} (A) and {sds[1]:.1f} (B)"


# ----------------------------------------------------------------------------- several seeds per method

def _seed_items(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    A, B = _seeds(A, "A"), _seeds(B, "B")
    if A.shape[1] != B.shape[1]:
        raise StatsError(f"A and B must score the same items: {A.shape[1]} vs {B.shape[1]} items.")
    return A, B


def _two_level_replicates(A: np.ndarray, B: np.ndarray, n_boot: int, seed: int, chunk: int = 256) -> np.ndarray:
    _check_boot(n_boot)
    rng = np.random.default_rng(seed)
    (sa, n), sb = A.shape, B.shape[0]
    A, B = A.astype(np.float64), B.astype(np.float64)
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        wa = rng.multinomial(sa, np.full(sa, 1 / sa), size=m) / sa       # (m, seeds of A): seed resampling
        wb = rng.multinomial(sb, np.full(sb, 1 / sb), size=m) / sb
        items = rng.multinomial(n, np.full(n, 1 / n), size=m)             # (m, items): shared item resampling
        per_item = wa @ A - wb @ B                                         # (m, items): seed-mean difference
        out[start:start + m] = (items * per_item).sum(axis=1) / n
    return 100.0 * out


def two_level_bootstrap_ci(A, B, *, n_boot: int = DEFAULT_BOOT, level: float = 0.95,
                           seed: int = 0) -> tuple[float, float]:
    """Percentile interval (points) of the seed-mean accuracy difference, resampling seeds then items.
    Kept for reference; verdicts over seeds use the t interval of `seeds_comparison`."""
    _check_level(level)
    _check_boot(n_boot)
    A, B = _seed_items(A, B)
    return _percentile(_two_level_replicates(A, B, n_boot, seed), level)


def seeds_comparison(A, B, *, n_boot: int = DEFAULT_BOOT, level: float = 0.95, seed: int = 0,
                     alpha: float = 0.05, power: float = 0.8, seed_sd=None) -> Comparison:
    """A against B with several training seeds: arrays (seeds, items) of 0/1, items in the same order in
    every row. A t interval over the seed means plus the item-level variance (module docstring). With one
    seed each this is `paired_comparison` (`seed_sd` then widens it); with one seed on one side only, that
    side's seed spread is `seed_sd` if given, else the other side's. `n_boot` and `seed` are accepted for
    compatibility (no bootstrap is drawn) and still checked."""
    _check_level(level)
    _check_alpha_power(alpha, power)
    _check_boot(n_boot)
    sds = _seed_sds(seed_sd)
    A, B = _seed_items(A, B)
    if A.shape[0] == 1 and B.shape[0] == 1:
        return paired_comparison(A[0], B[0], n_boot=n_boot, level=level, seed=seed, alpha=alpha, power=power,
                                 seed_sd=seed_sd)
    (sa, n), sb = A.shape, B.shape[0]
    acc_a_seeds, acc_b_seeds = 100.0 * A.mean(axis=1), 100.0 * B.mean(axis=1)
    d = float(acc_a_seeds.mean() - acc_b_seeds.mean())
    var_a = float(np.var(acc_a_seeds, ddof=1)) if sa > 1 else math.nan
    var_b = float(np.var(acc_b_seeds, ddof=1)) if sb > 1 else math.nan
    # within-item variance over seeds (proportion scale), for the item part
    w_a = float(np.var(A, axis=0, ddof=1).mean()) if sa > 1 else math.nan
    w_b = float(np.var(B, axis=0, ddof=1).mean()) if sb > 1 else math.nan
    noise = f"items and training seeds (measured over {sa} and {sb} seeds)"
    df_a, df_b = sa - 1, sb - 1
    for side in ("a", "b"):  # a single-seed side: its spread from seed_sd, else borrowed from the other side
        if (sa if side == "a" else sb) > 1:
            continue
        other_var, other_w, other_df = (var_b, w_b, df_b) if side == "a" else (var_a, w_a, df_a)
        if sds is not None:
            v, dfv = (sds[0] if side == "a" else sds[1]) ** 2, math.inf
            noise += f"; {side.upper()}'s single seed given the spread {math.sqrt(v):.1f} points measured elsewhere"
        else:
            v, dfv = other_var, other_df
            noise += f"; {side.upper()}'s single seed assumed to spread like {'B' if side == 'a' else 'A'}'s"
        if side == "a":
            var_a, w_a, df_a = v, other_w, dfv
        else:
            var_b, w_b, df_b = v, other_w, dfv
    seed_a, seed_b = var_a / sa, var_b / sb
    per_item = A.mean(axis=0) - B.mean(axis=0)
    v_items = float(np.var(per_item, ddof=1)) if n > 1 else 0.0
    item_part = 1e4 * max(0.0, v_items - w_a / sa - w_b / sb) / n
    se = math.sqrt(seed_a + seed_b + item_part)
    denom = sum(t * t / f for t, f in ((seed_a, df_a), (seed_b, df_b), (item_part, n - 1)) if f and t > 0
                and not math.isinf(f))
    df = (se ** 4 / denom) if denom > 0 else math.inf
    tq = t_ppf(0.5 + level / 2, df)
    lo, hi = d - tq * se, d + tq * se
    p = 1.0 if se == 0 and d == 0 else (0.0 if se == 0 else min(1.0, 2.0 * t_sf(abs(d) / se, df)))
    a_only = float(np.mean([((x == 1) & (y == 0)).sum() for x in A for y in B]))  # over every seed pair
    b_only = float(np.mean([((x == 0) & (y == 1)).sum() for x in A for y in B]))
    def sd(v):
        return float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
    return Comparison(n_items=n, seeds_a=sa, seeds_b=sb, acc_a=float(acc_a_seeds.mean()),
                      acc_b=float(acc_b_seeds.mean()), diff=d, ci_low=lo, ci_high=hi, level=level, p=p,
                      p_kind=f"t test over seed means (df {df:.1f})", a_only=a_only, b_only=b_only,
                      discordance=(a_only + b_only) / n,
                      mdd=min_detectable_difference(max(se, paired_se(0.0, n)), alpha=alpha, power=power, df=df),
                      power=power, interval=f"t interval over seed means (df {df:.1f}), item variance added",
                      acc_a_seeds=tuple(map(float, acc_a_seeds)), acc_b_seeds=tuple(map(float, acc_b_seeds)),
                      seed_sd_a=sd(acc_a_seeds), seed_sd_b=sd(acc_b_seeds), alpha=alpha, noise=noise,
                      assumed_sd=sds if sds is not None and min(sa, sb) == 1 else (), se_low=se, se_high=se,
                      df=df)


# ----------------------------------------------------------------------------- verdicts

def verdict(ci_low: float, ci_high: float, *, claim: str = "better", margin: float = 0.0, digits: int = 1,
            p: float | None = None, alpha: float = 0.05) -> str:
    """What an interval of A - B (points) says about a claim:

    claim="better"    A is better than B: "holds" if ci_low > 0, "does not hold" if ci_high <= 0 -- each only
                      if `p` (when given: the test of no difference) is below `alpha`;
    claim="no_worse"  A is no worse than B by more than `margin` points: "holds" if ci_low > -margin,
                      "does not hold" if ci_high < -margin;
    otherwise "cannot tell, the interval is [a, b]" (with the p-value where that is what stopped it)."""
    _boundary(claim, margin)
    for v in (ci_low, ci_high):
        if v is None or not isinstance(v, (int, float, np.floating, np.integer)) or math.isnan(v):
            raise StatsError(f"interval [{ci_low}, {ci_high}] has a missing or NaN end: nothing to judge.")
    if ci_low > ci_high:
        raise StatsError(f"interval [{ci_low}, {ci_high}] is reversed.")
    if p is not None and (not isinstance(p, (int, float, np.floating)) or math.isnan(p) or not 0 <= p <= 1):
        raise StatsError(f"p must be in [0, 1], got {p!r}.")
    interval = f"[{ci_low:+.{digits}f}, {ci_high:+.{digits}f}]"
    if claim == "better":
        decided = "holds" if ci_low > 0 else "does not hold" if ci_high <= 0 else None
        if decided and p is not None and p >= alpha:
            return (f"{CANNOT_TELL}, the interval is {interval} but the test of no difference gives "
                    f"p = {p:.3g} >= {alpha:g}")
        if decided:
            return decided
    else:
        if ci_low > -margin:
            return "holds"
        if ci_high < -margin:
            return "does not hold"
    return f"{CANNOT_TELL}, the interval is {interval}"


def _decisive(v: str) -> bool:
    return v in ("holds", "does not hold")


def describe(cmp: Comparison, name_a: str = "A", name_b: str = "B", *, claim: str = "better",
             margin: float = 0.0) -> str:
    """One sentence of numbers for a chapter's verdict (markdown), built from `cmp` only. It says what noise
    the interval covers: with one seed each, item noise only (unless a seed spread widened it)."""
    seeds = (f"{cmp.seeds_a} seed{'s' if cmp.seeds_a > 1 else ''} of {name_a}, "
             f"{cmp.seeds_b} seed{'s' if cmp.seeds_b > 1 else ''} of {name_b}")
    spread = ""
    if cmp.seeds_a > 1 or cmp.seeds_b > 1:
        def fmt(v):
            return ", ".join(f"{x:.1f}" for x in v)
        spread = f"; per seed {name_a} {fmt(cmp.acc_a_seeds)}, {name_b} {fmt(cmp.acc_b_seeds)}"
    if cmp.one_seed and not cmp.assumed_sd:
        scope = (" One training run each: the interval covers item noise only, not the spread between training "
                 "seeds, so it speaks of these two trained models rather than of the methods.")
    elif cmp.one_seed:
        scope = (f" One training run each; the interval is widened by a seed spread of {_fmt_sds(cmp.assumed_sd)} "
                 "points per run measured elsewhere (item and seed standard errors added in quadrature), so it "
                 "speaks of the methods if that spread holds here.")
    else:
        scope = f" The interval covers {cmp.noise}."
    a_only = f"{cmp.a_only:.4g}" if isinstance(cmp.a_only, float) else f"{cmp.a_only}"
    b_only = f"{cmp.b_only:.4g}" if isinstance(cmp.b_only, float) else f"{cmp.b_only}"
    return (f"{name_a} {cmp.acc_a:.1f} vs {name_b} {cmp.acc_b:.1f}: {cmp.diff:+.1f} points, "
            f"{100 * cmp.level:.0f}% interval [{cmp.ci_low:+.1f}, {cmp.ci_high:+.1f}] "
            f"({cmp.interval}; {cmp.n_items} items, {seeds}{spread}), "
            f"{a_only} items only {name_a} gets right and {b_only} only {name_b}, "
            f"p = {cmp.p:.3g} ({cmp.p_kind}); this budget detects a difference of {cmp.mdd:.1f} points "
            f"with {100 * cmp.power:.0f}% power.{scope} Verdict: **{cmp.verdict(claim, margin)}**")


# ----------------------------------------------------------------------------- multiplicity

def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order: p_(i) * (m - i + 1) (i from 1, ascending),
    made monotone and capped at 1. Family-wise error <= alpha under any dependence."""
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise StatsError(f"p-values must be a 1-d list, got shape {p.shape}.")
    if np.isnan(p).any() or ((p < 0) | (p > 1)).any():
        raise StatsError(f"p-values must be in [0, 1], got {p.tolist()}.")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def adjusted_verdict(raw: str, p_adjusted: float, ci_low: float, ci_high: float, *, alpha: float = 0.05,
                     family: str = "", size: int = 1) -> str:
    """A verdict after the family's correction: a decisive one stays only if its adjusted p is below alpha."""
    if not _decisive(raw) or p_adjusted < alpha:
        return raw
    return (f"{CANNOT_TELL} after Holm over {size} claims{f' of {family}' if family else ''}, the interval is "
            f"[{ci_low:+.1f}, {ci_high:+.1f}] and the adjusted p = {p_adjusted:.3g}")


def correct_family(rows, *, family: str, alpha: float = 0.05, headline: Iterable[str] = ()):
    """Holm over one family of verdicts (a chapter's), returning a DataFrame with, per row: `family`,
    `correction`, `p_adjusted`, `verdict_unadjusted` and `verdict` (adjusted), and `headline`.

    `rows`: a dict label -> row, a list of rows, or a DataFrame; a row is a `Comparison.to_row()` /
    `eas.study.experiments.compare_runs` dict, or any mapping with `p` (or `p_claim`, preferred: the p of the
    claim's own test), `verdict`, `ci_low`, `ci_high`. `headline`: labels of the pre-registered claims
    (or a boolean `headline` column). Rows without a p-value (NaN: a verdict no test backs, e.g. timing
    within a noise band) are left as they are, outside the count."""
    import pandas as pd

    if not 0 < alpha < 1:
        raise StatsError(f"alpha must be in (0, 1), got {alpha!r}.")
    if isinstance(rows, pd.DataFrame):
        frame = rows.copy()
    elif isinstance(rows, Mapping):
        frame = pd.DataFrame([_plain(r) for r in rows.values()], index=list(rows))
    else:
        frame = pd.DataFrame([_plain(r) for r in rows])
    if frame.empty:
        raise StatsError(f"family {family!r} has no claims.")
    missing = [c for c in ("verdict", "ci_low", "ci_high") if c not in frame]
    if missing or ("p" not in frame and "p_claim" not in frame):
        raise StatsError(f"family {family!r}: rows need p (or p_claim), verdict, ci_low and ci_high; missing "
                         f"{missing or ['p']}.")
    p = pd.to_numeric(frame["p_claim"] if "p_claim" in frame else frame["p"], errors="coerce")
    if "p_claim" in frame and "p" in frame:
        p = p.fillna(pd.to_numeric(frame["p"], errors="coerce"))
    tested = p.notna().to_numpy()
    size = int(tested.sum())
    adjusted = np.full(len(frame), np.nan)
    if size:
        adjusted[tested] = holm(p[tested].to_numpy())
    heads = set(headline)
    unknown = heads - set(map(str, frame.index))
    if unknown:
        raise StatsError(f"headline claims {sorted(unknown)} are not in family {family!r}.")
    flag = [bool(v) if v is not None and v == v else False for v in frame["headline"]] if "headline" in frame \
        else [False] * len(frame)
    frame["headline"] = [f or str(i) in heads for f, i in zip(flag, frame.index)]
    frame["family"] = family
    frame["correction"] = [f"holm over {size}" if t else "none (no test)" for t in tested]
    frame["p_adjusted"] = adjusted
    frame["verdict_unadjusted"] = frame["verdict"]
    frame["verdict"] = [adjusted_verdict(v, pa, lo, hi, alpha=alpha, family=family, size=size) if t else v
                        for v, pa, lo, hi, t in zip(frame["verdict"], adjusted, frame["ci_low"], frame["ci_high"],
                                                    tested)]
    return frame


def family_note(frame, *, alpha: float = 0.05) -> str:
    """One sentence on a corrected family (the output of `correct_family`): how many verdicts, the correction,
    which are headline claims, and how many decisive verdicts the correction turned into "cannot tell"."""
    family = str(frame["family"].iloc[0]) if len(frame) else "?"
    size = int(frame["p_adjusted"].notna().sum())
    lost = int(sum(_decisive(u) and not _decisive(v) for u, v in zip(frame["verdict_unadjusted"], frame["verdict"])))
    heads = [str(i) for i, h in zip(frame.index, frame["headline"]) if h]
    return (f"{family} makes {size} tested verdict{'s' if size != 1 else ''}; Holm's correction keeps the chance of "
            f"any false decisive one at or below {alpha:g} for the family"
            + (f" (headline, pre-registered: {', '.join(heads)})" if heads else "")
            + (f"; it turned {lost} decisive verdict{'s' if lost != 1 else ''} into \"cannot tell\"." if lost
               else "; it changed no verdict."))


def _plain(row) -> dict:
    if isinstance(row, Comparison):
        return row.to_row()
    if isinstance(row, Mapping):
        return {k: v for k, v in row.items() if k != "comparison"}
    raise StatsError(f"a family row must be a Comparison or a mapping, got {type(row).__name__}.")


# ----------------------------------------------------------------------------- pairing by item id

_TRUE = {"true", "1", "1.0", "yes"}
_FALSE = {"false", "0", "0.0", "no"}


@dataclass(frozen=True)
class PairedItems:
    """Runs of A and of B aligned on their shared item ids: `a` (seeds of A, items) and `b` likewise, or 1-d
    vectors when one run was given per side; `only_a` / `only_b`: ids dropped (missing="drop")."""

    ids: tuple
    a: np.ndarray
    b: np.ndarray
    only_a: tuple = ()
    only_b: tuple = ()

    @property
    def note(self) -> str:
        if not self.only_a and not self.only_b:
            return f"{len(self.ids)} items, every one scored by every run."
        return (f"{len(self.ids)} shared items compared; dropped {_some(self.only_a)} not scored by every run of B "
                f"and {_some(self.only_b)} not scored by every run of A.")


def _some(ids, k: int = 5) -> str:
    ids = list(ids)
    if not ids:
        return "0 items"
    shown = ", ".join(map(str, ids[:k]))
    return f"{len(ids)} item{'s' if len(ids) != 1 else ''} ({shown}{', ...' if len(ids) > k else ''})"


def _correctness(values, ids, name: str) -> np.ndarray:
    """0/1 from booleans, 0/1 numbers or their spellings; empty / NaN / anything else raises naming the ids."""
    arr = np.asarray(values)
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if arr.dtype.kind in "iuf" and not (arr.dtype.kind == "f" and np.isnan(arr).any()) and np.isin(arr, (0, 1)).all():
        return arr.astype(np.int8)
    out = np.empty(len(values), dtype=np.int8)
    empty, bad = [], []
    for i, (v, uid) in enumerate(zip(values, ids)):
        blank = isinstance(v, str) and not v.strip()
        if v is None or blank or (isinstance(v, (float, np.floating)) and math.isnan(v)):
            empty.append(uid)
            continue
        if isinstance(v, (bool, np.bool_)):
            out[i] = int(v)
        elif isinstance(v, (int, float, np.integer, np.floating)) and v in (0, 1):
            out[i] = int(v)
        elif isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
            out[i] = int(v.strip().lower() in _TRUE)
        else:
            bad.append(f"{uid}={v!r}")
    if empty:
        raise StatsError(f"{name} has no correctness for {_some(empty)}: an empty cell is not a score.")
    if bad:
        raise StatsError(f"{name} must hold 0/1 or booleans; got {_some(bad)}.")
    return out


def _run_series(run, name: str, id_col: str, value_col: str):
    """(ids, values) of one run: a DataFrame with id_col and value_col, a Series indexed by id, or a mapping."""
    import pandas as pd

    if isinstance(run, pd.DataFrame):
        missing = [c for c in (id_col, value_col) if c not in run]
        if missing:
            raise StatsError(f"{name} has no column {missing} (columns: {list(run.columns)}).")
        ids, values = run[id_col].tolist(), run[value_col].to_numpy()
    elif isinstance(run, pd.Series):
        ids, values = run.index.tolist(), run.to_numpy()
    elif isinstance(run, Mapping):
        ids, values = list(run.keys()), list(run.values())
    else:
        raise StatsError(f"{name} must be a DataFrame ({id_col}, {value_col}), a Series indexed by item id or a "
                         f"mapping id -> correct; got {type(run).__name__}.")
    if not ids:
        raise StatsError(f"{name} scores no items.")
    if any(not isinstance(i, str) and (i is None or (isinstance(i, float) and math.isnan(i))) for i in ids):
        raise StatsError(f"{name} has items without an id.")
    ids = [i if isinstance(i, str) else str(i) for i in ids]
    dup = {}
    if len(set(ids)) != len(ids):
        seen = set()
        for i in ids:
            if i in seen:
                dup[i] = dup.get(i, 1) + 1
            seen.add(i)
    if dup:
        listed = ", ".join(f"{i} (x{c})" for i, c in list(dup.items())[:5])
        raise StatsError(f"{name} lists {len(dup)} item id{'s' if len(dup) > 1 else ''} more than once: {listed}"
                         f"{', ...' if len(dup) > 5 else ''}; pairing would cross-pair them.")
    return ids, _correctness(values, ids, name)


def pair_by_item(runs_a, runs_b, *, id_col: str = "uid", value_col: str = "correct",
                 missing: str = "raise") -> PairedItems:
    """Align per-item correctness of A's and B's runs by item id (never by row order).

    `runs_a`, `runs_b`: one run or a list of runs (training seeds); a run is a DataFrame with `id_col` and
    `value_col` (a run's generations.csv), a Series indexed by item id, or a mapping id -> correct.
    Duplicate ids, empty / NaN / non-0/1 correctness raise, naming the ids. Items not scored by every run
    raise (`missing="raise"`, the default) naming how many and the first ids, or are dropped and reported
    (`missing="drop"`: see `PairedItems.note`). The item order is that of A's first run."""
    if missing not in ("raise", "drop"):
        raise StatsError(f"missing must be 'raise' or 'drop', got {missing!r}.")
    def single(r):
        return not isinstance(r, (list, tuple))
    one_a, one_b = single(runs_a), single(runs_b)
    list_a = [runs_a] if one_a else list(runs_a)
    list_b = [runs_b] if one_b else list(runs_b)
    if not list_a or not list_b:
        raise StatsError("pairing needs at least one run on each side.")
    parsed_a = [_run_series(r, f"A's run {i}" if len(list_a) > 1 else "A", id_col, value_col)
                for i, r in enumerate(list_a)]
    parsed_b = [_run_series(r, f"B's run {i}" if len(list_b) > 1 else "B", id_col, value_col)
                for i, r in enumerate(list_b)]
    sets_a, sets_b = [set(ids) for ids, _ in parsed_a], [set(ids) for ids, _ in parsed_b]
    all_a, all_b = set.intersection(*sets_a), set.intersection(*sets_b)
    union = set.union(*sets_a, *sets_b)
    shared = all_a & all_b
    order = [i for i in parsed_a[0][0] if i in shared]
    if len(shared) != len(union):
        not_everywhere_a = sorted(set.union(*sets_a) - shared, key=str)
        not_everywhere_b = sorted(set.union(*sets_b) - shared, key=str)
        if missing == "raise":
            raise StatsError(f"the runs do not score the same items: {_some(not_everywhere_a)} of A's runs and "
                             f"{_some(not_everywhere_b)} of B's are missing from some run; pass missing='drop' to "
                             "compare on the shared items only.")
        only_a, only_b = tuple(not_everywhere_a), tuple(not_everywhere_b)
    else:
        only_a = only_b = ()
    if not order:
        raise StatsError("the runs share no items.")

    def matrix(parsed):
        rows = []
        for ids, values in parsed:
            pos = {i: k for k, i in enumerate(ids)}
            rows.append(values[[pos[i] for i in order]])
        return np.stack(rows)

    A, B = matrix(parsed_a), matrix(parsed_b)
    return PairedItems(ids=tuple(order), a=A[0] if one_a else A, b=B[0] if one_b else B, only_a=only_a, only_b=only_b)


def compare(runs_a, runs_b, *, id_col: str = "uid", value_col: str = "correct", missing: str = "raise",
            **kw) -> Comparison:
    """`pair_by_item` then `seeds_comparison` (one run each: `paired_comparison`); `kw` go to the latter."""
    paired = pair_by_item(runs_a, runs_b, id_col=id_col, value_col=value_col, missing=missing)
    return seeds_comparison(paired.a, paired.b, **kw)


# ----------------------------------------------------------------------------- selection on held-out items

def _unit_hash(uid: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}\x00{uid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def split_items(ids: Iterable, *, seed: int = 0, fraction: float = 0.5) -> tuple[list, list]:
    """(selection ids, comparison ids): each id falls in the selection part when a seeded hash of it is below
    `fraction`, so an item's side depends only on its id and the seed (stable across runs and chapters).
    Input order is kept. Duplicate ids and an empty part raise."""
    if not 0 < fraction < 1:
        raise StatsError(f"fraction must be in (0, 1), got {fraction!r}.")
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise StatsError(f"item ids repeat: {_some(dup)}.")
    selection = [i for i in ids if _unit_hash(i, seed) < fraction]
    chosen = set(selection)
    comparison = [i for i in ids if i not in chosen]
    if not selection or not comparison:
        raise StatsError(f"splitting {len(ids)} items at fraction {fraction} leaves one part empty.")
    return selection, comparison


@dataclass(frozen=True)
class Selection:
    """`select_then_compare`'s result: the rival picked on the selection items, and A against it on the rest."""

    best: str
    selection_accuracy: dict       # label -> accuracy (points) on the selection items
    n_selection: int
    n_comparison: int
    split_seed: int
    comparison: Comparison | None  # None when A itself is the best on the selection items
    claim: str = "better"
    margin: float = 0.0

    def verdict(self) -> str:
        if self.comparison is None:
            return "A is the best on the selection items: nothing to compare"
        return self.comparison.verdict(self.claim, self.margin)

    def to_row(self) -> dict:
        row = ({"verdict": self.verdict()} if self.comparison is None
               else self.comparison.to_row(self.claim, self.margin))
        return {**row, "best": self.best, "selection_accuracy": dict(self.selection_accuracy),
                "n_selection": self.n_selection, "n_comparison": self.n_comparison, "split_seed": self.split_seed,
                "comparison": self.comparison}


def select_then_compare(a, candidates: Mapping, *, claim: str = "better", margin: float = 0.0,
                        a_seeds: Sequence | None = None,
                        candidate_seeds: Mapping | Callable | None = None, split_seed: int = 0,
                        fraction: float = 0.5, id_col: str = "uid", value_col: str = "correct",
                        level: float = 0.95, alpha: float = 0.05, power: float = 0.8, seed_sd=None) -> Selection:
    """Pick the best of `candidates` on one part of the items, then compare A against it on the other part.

    `a`: A's run (a DataFrame with uid/correct or a Series by item id), or the label of one of `candidates`
    (then A may itself be the best, and no comparison is made). `candidates`: label -> one run each, ranked
    by accuracy on the selection items (ties: the first listed). The comparison, on the comparison items
    only, uses one run each, or, when given, A's seeds (`a_seeds`) and the winner's (`candidate_seeds`:
    label -> list of runs, or a callable label -> list of runs, so only the winner's seeds need exist).
    Items are split by `split_items(ids, seed=split_seed, fraction=fraction)` over the items every run
    scores (mismatches raise, as in `pair_by_item`)."""
    _boundary(claim, margin)
    if not candidates:
        raise StatsError("select_then_compare needs at least one candidate.")
    a_label = a if isinstance(a, str) else None
    if a_label is not None and a_label not in candidates:
        raise StatsError(f"A's label {a_label!r} is not among the candidates {list(candidates)}.")
    run_a = candidates[a_label] if a_label is not None else a
    labels = list(candidates)
    paired = pair_by_item(run_a, [candidates[k] for k in labels], id_col=id_col, value_col=value_col)
    selection, comparison_ids = split_items(paired.ids, seed=split_seed, fraction=fraction)
    chosen = set(selection)
    mask = np.array([i in chosen for i in paired.ids])
    acc = {k: 100.0 * float(paired.b[j][mask].mean()) for j, k in enumerate(labels)}
    best = max(labels, key=lambda k: (acc[k], -labels.index(k)))
    common = dict(claim=claim, margin=margin, best=best, selection_accuracy=acc, n_selection=int(mask.sum()),
                  n_comparison=int((~mask).sum()), split_seed=split_seed)
    if best == a_label:
        return Selection(comparison=None, **common)
    runs_a = list(a_seeds) if a_seeds is not None else run_a
    if candidate_seeds is None:
        runs_b = candidates[best]
    else:
        runs_b = list(candidate_seeds(best) if callable(candidate_seeds) else candidate_seeds[best])
    fresh = pair_by_item(runs_a, runs_b, id_col=id_col, value_col=value_col)
    keep = set(comparison_ids)
    scored = set(fresh.ids)
    missing_here = [i for i in comparison_ids if i not in scored]
    if missing_here:
        raise StatsError(f"the comparison runs do not score {_some(missing_here)} of the comparison items.")
    cols = np.array([i in keep for i in fresh.ids])
    A = fresh.a[..., cols]
    B = fresh.b[..., cols]
    cmp = seeds_comparison(np.atleast_2d(A), np.atleast_2d(B), level=level, alpha=alpha, power=power, seed_sd=seed_sd)
    return Selection(comparison=cmp, **common)


# ----------------------------------------------------------------------------- figures

def plot_comparisons(ax, rows: dict, *, title: str = "paired differences, 95% interval"):
    """A forest plot on `ax`: one line per comparison (label -> a `compare_runs` / `Comparison.to_row()` row):
    the difference A - B in points, its interval, and the smallest detectable difference as a grey band."""
    labels = list(rows)
    for i, label in enumerate(labels):
        r = rows[label]
        ax.plot([r["ci_low"], r["ci_high"]], [i, i], color="tab:blue", lw=2)
        ax.plot([r["diff"]], [i], "o", color="tab:blue")
        ax.plot([-r["mdd"], r["mdd"]], [i, i], color="grey", lw=8, alpha=0.2, solid_capstyle="butt")
    ax.axvline(0, color="black", lw=0.8)
    ax.set(yticks=range(len(labels)), yticklabels=labels, ylim=(len(labels) - 0.5, -0.5),
           xlabel="accuracy difference A - B (points); grey: +/- smallest detectable", title=title)
    return ax


def plot_seeds(ax, accuracies: dict, *, ylabel: str = "accuracy", title: str = "per training seed"):
    """Each method's per-seed accuracies as dots, their mean as a bar: the seed spread at a glance."""
    for i, (label, values) in enumerate(accuracies.items()):
        values = list(values)
        ax.bar(i, float(np.mean(values)), color="tab:blue", alpha=0.3, width=0.6)
        ax.plot([i] * len(values), values, "o", color="tab:blue")
    ax.set(xticks=range(len(accuracies)), xticklabels=list(accuracies), ylabel=ylabel, title=title)
    return ax
