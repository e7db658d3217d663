"""Paired comparisons of two methods scored on the same test items, and verdicts that say what a budget can tell.

Two methods evaluated on the same questions are not two independent samples: most items are right (or
wrong) for both, and only the *discordant* items (right for one method, wrong for the other) carry
information about the difference. Treating the two accuracies as independent binomials (the old
`gap_se`) overstates the noise several times over. Everything here works on per-item 0/1 correctness
vectors aligned by item, and reports differences in percentage points.

    cmp = paired_comparison(a, b)                 # one run each: vectors of 0/1, same items, same order
    cmp = seeds_comparison(A, B)                  # several training seeds: arrays (seeds, items)
    cmp.verdict("better")                         # "holds" | "does not hold" | "cannot tell, the interval is [a, b]"
    cmp.verdict("no_worse", margin=2.0)           # "A is at most 2 points worse than B"

The choices, stated once:

* **Interval, one seed each** (`paired_bootstrap_ci`): the percentile interval of the mean per-item
  difference d_i = a_i - b_i under resampling items with replacement. Since d_i takes only the values
  +1, -1 and 0, resampling n items is exactly a multinomial draw of the three counts, which is what is
  drawn (vectorised, seeded, no n_boot x n index matrix).
* **p-value, one seed each** (`mcnemar_exact`): the exact two-sided McNemar test, i.e. a binomial test
  of the discordant counts against 1/2, p = min(1, 2 P[X <= min(n10, n01)]) with X ~ Bin(n10 + n01, 1/2),
  computed with exact integer arithmetic.
* **Interval with seeds** (`two_level_bootstrap_ci`): each replicate resamples A's seeds and B's seeds
  with replacement (independently: seed s of A and seed s of B are different trainings, not a pair),
  then resamples items with replacement, the *same* items for both methods (the item pairing is kept).
  The replicate is the difference of the two means over the drawn seeds and items. Its spread therefore
  contains both the test-set noise and the training-seed noise. With one seed per method the seed level
  is a no-op and it reduces to the paired item bootstrap. With two or three seeds the seed level
  underestimates the seed variance somewhat (a bootstrap of 3 values); the per-seed accuracies are
  reported too, so the spread can be seen directly.
* **p-value with seeds**: the two-level bootstrap's two-sided p-value, 2 min(P*[d <= 0], P*[d >= 0]),
  consistent with the interval (not an exact test). McNemar is not used there: pooling the items of
  several seeds would count each test item several times.
* **Smallest detectable difference** (`min_detectable_difference`): (z_{1-alpha/2} + z_power) * SE, the
  true difference that a two-sided test at level alpha detects with the given power (80% by default).
  One seed each: SE = sqrt(q / n) with q the discordance rate (the SE of the mean difference when the
  methods are equal). With seeds: SE = the interval's half-width / z_{1-alpha/2}, so it includes the
  seed variance. Zero discordant items give q = 1/n (one discordant item), not a zero MDD.
* **Verdicts** read the interval only: "A better than B" holds if the whole interval is above 0 and does
  not hold if it lies at or below 0; "A no worse than B by more than m" holds if the interval's lower end
  is above -m and does not hold if its upper end is below -m. Anything else is "cannot tell", with the
  interval. The p-value and the interval can disagree at the margin (they are different procedures).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

CLAIMS = ("better", "no_worse")
DEFAULT_BOOT = 10_000


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
    if not np.isin(arr, (0, 1)).all():
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


def _z(p: float) -> float:
    return NormalDist().inv_cdf(p)


# ----------------------------------------------------------------------------- one seed per method

def discordant(a, b) -> tuple[int, int]:
    """(items only A gets right, items only B gets right)."""
    a, b = _pair(a, b)
    return int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts (binomial test against 1/2)."""
    if a_only < 0 or b_only < 0:
        raise StatsError(f"discordant counts must be >= 0, got {a_only}, {b_only}.")
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def paired_bootstrap_ci(a, b, *, n_boot: int = DEFAULT_BOOT, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile interval (points) of mean(a) - mean(b) under resampling items with replacement."""
    _check_level(level)
    a, b = _pair(a, b)
    return _percentile(_paired_replicates(a, b, n_boot, seed), level)


def _paired_replicates(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    n = a.size
    a_only, b_only = discordant(a, b)
    probs = np.array([a_only, b_only, n - a_only - b_only], dtype=float) / n
    counts = np.random.default_rng(seed).multinomial(n, probs, size=n_boot)
    return 100.0 * (counts[:, 0] - counts[:, 1]) / n


def _percentile(replicates: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(replicates, [tail, 100 - tail])
    return float(lo), float(hi)


def min_detectable_difference(se: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The true difference (same units as `se`) a two-sided level-alpha test detects with `power`."""
    if not 0 < power < 1 or not 0 < alpha < 1:
        raise StatsError(f"alpha and power must be in (0, 1), got {alpha!r}, {power!r}.")
    return (_z(1 - alpha / 2) + _z(power)) * se


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
    p: float                     # exact McNemar (one seed each) or two-level bootstrap p (seeds)
    p_kind: str
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

    def verdict(self, claim: str = "better", margin: float = 0.0) -> str:
        return verdict(self.ci_low, self.ci_high, claim=claim, margin=margin)

    def to_row(self, claim: str = "better", margin: float = 0.0) -> dict:
        row = asdict(self)
        row["acc_a_seeds"] = list(self.acc_a_seeds)
        row["acc_b_seeds"] = list(self.acc_b_seeds)
        row["claim"] = claim if claim == "better" else f"no worse by more than {margin:g}"
        row["verdict"] = self.verdict(claim, margin)
        return row


def paired_comparison(a, b, *, n_boot: int = DEFAULT_BOOT, level: float = 0.95, seed: int = 0,
                      alpha: float = 0.05, power: float = 0.8) -> Comparison:
    """A against B, one run each, on the same items (0/1 vectors in the same item order)."""
    _check_level(level)
    a, b = _pair(a, b)
    n = a.size
    a_only, b_only = discordant(a, b)
    lo, hi = _percentile(_paired_replicates(a, b, n_boot, seed), level)
    q = (a_only + b_only) / n
    acc_a, acc_b = 100.0 * a.mean(), 100.0 * b.mean()
    return Comparison(n_items=n, seeds_a=1, seeds_b=1, acc_a=float(acc_a), acc_b=float(acc_b),
                      diff=float(acc_a - acc_b), ci_low=lo, ci_high=hi, level=level,
                      p=mcnemar_exact(a_only, b_only), p_kind="exact McNemar", a_only=a_only, b_only=b_only,
                      discordance=q, mdd=min_detectable_difference(paired_se(q, n), alpha=alpha, power=power),
                      power=power, interval="paired bootstrap over items",
                      acc_a_seeds=(float(acc_a),), acc_b_seeds=(float(acc_b),))


# ----------------------------------------------------------------------------- several seeds per method

def _seed_items(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    A, B = _seeds(A, "A"), _seeds(B, "B")
    if A.shape[1] != B.shape[1]:
        raise StatsError(f"A and B must score the same items: {A.shape[1]} vs {B.shape[1]} items.")
    return A, B


def _two_level_replicates(A: np.ndarray, B: np.ndarray, n_boot: int, seed: int, chunk: int = 256) -> np.ndarray:
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
    """Percentile interval (points) of the seed-mean accuracy difference, resampling seeds then items."""
    _check_level(level)
    A, B = _seed_items(A, B)
    return _percentile(_two_level_replicates(A, B, n_boot, seed), level)


def seeds_comparison(A, B, *, n_boot: int = DEFAULT_BOOT, level: float = 0.95, seed: int = 0,
                     alpha: float = 0.05, power: float = 0.8) -> Comparison:
    """A against B with several training seeds each: arrays (seeds, items) of 0/1, items in the same order
    in every row. With one seed each this is `paired_comparison` (exact McNemar, paired bootstrap)."""
    _check_level(level)
    A, B = _seed_items(A, B)
    if A.shape[0] == 1 and B.shape[0] == 1:
        return paired_comparison(A[0], B[0], n_boot=n_boot, level=level, seed=seed, alpha=alpha, power=power)
    n = A.shape[1]
    reps = _two_level_replicates(A, B, n_boot, seed)
    lo, hi = _percentile(reps, level)
    p = float(min(1.0, 2 * min((reps <= 0).mean(), (reps >= 0).mean())))
    acc_a_seeds, acc_b_seeds = 100.0 * A.mean(axis=1), 100.0 * B.mean(axis=1)
    # discordance averaged over every (seed of A, seed of B) pair
    a_only = float(np.mean([((x == 1) & (y == 0)).sum() for x in A for y in B]))
    b_only = float(np.mean([((x == 0) & (y == 1)).sum() for x in A for y in B]))
    se = (hi - lo) / (2 * _z(0.5 + level / 2))
    sd = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
    return Comparison(n_items=n, seeds_a=A.shape[0], seeds_b=B.shape[0], acc_a=float(acc_a_seeds.mean()),
                      acc_b=float(acc_b_seeds.mean()), diff=float(acc_a_seeds.mean() - acc_b_seeds.mean()),
                      ci_low=lo, ci_high=hi, level=level, p=p, p_kind="two-level bootstrap", a_only=a_only,
                      b_only=b_only, discordance=(a_only + b_only) / n,
                      mdd=min_detectable_difference(max(se, paired_se(0.0, n)), alpha=alpha, power=power),
                      power=power, interval="two-level bootstrap: seeds, then items",
                      acc_a_seeds=tuple(map(float, acc_a_seeds)), acc_b_seeds=tuple(map(float, acc_b_seeds)),
                      seed_sd_a=sd(acc_a_seeds), seed_sd_b=sd(acc_b_seeds))


# ----------------------------------------------------------------------------- verdicts

def verdict(ci_low: float, ci_high: float, *, claim: str = "better", margin: float = 0.0, digits: int = 1) -> str:
    """What an interval of A - B (points) says about a claim:

    claim="better"    A is better than B: "holds" if ci_low > 0, "does not hold" if ci_high <= 0;
    claim="no_worse"  A is no worse than B by more than `margin` points: "holds" if ci_low > -margin,
                      "does not hold" if ci_high < -margin;
    otherwise "cannot tell, the interval is [a, b]"."""
    if claim not in CLAIMS:
        raise StatsError(f"unknown claim {claim!r}; expected one of {', '.join(CLAIMS)}.")
    if ci_low > ci_high:
        raise StatsError(f"interval [{ci_low}, {ci_high}] is reversed.")
    if claim == "better":
        if margin:
            raise StatsError("claim 'better' takes no margin (use claim='no_worse').")
        if ci_low > 0:
            return "holds"
        if ci_high <= 0:
            return "does not hold"
    else:
        if margin < 0:
            raise StatsError(f"margin must be >= 0 points, got {margin!r}.")
        if ci_low > -margin:
            return "holds"
        if ci_high < -margin:
            return "does not hold"
    return f"cannot tell, the interval is [{ci_low:+.{digits}f}, {ci_high:+.{digits}f}]"


def describe(cmp: Comparison, name_a: str = "A", name_b: str = "B", *, claim: str = "better",
             margin: float = 0.0) -> str:
    """One sentence of numbers for a chapter's verdict (markdown), built from `cmp` only."""
    seeds = (f"{cmp.seeds_a} seed{'s' if cmp.seeds_a > 1 else ''} of {name_a}, "
             f"{cmp.seeds_b} seed{'s' if cmp.seeds_b > 1 else ''} of {name_b}")
    spread = ""
    if cmp.seeds_a > 1 or cmp.seeds_b > 1:
        fmt = lambda v: ", ".join(f"{x:.1f}" for x in v)
        spread = f"; per seed {name_a} {fmt(cmp.acc_a_seeds)}, {name_b} {fmt(cmp.acc_b_seeds)}"
    return (f"{name_a} {cmp.acc_a:.1f} vs {name_b} {cmp.acc_b:.1f}: {cmp.diff:+.1f} points, "
            f"{100 * cmp.level:.0f}% interval [{cmp.ci_low:+.1f}, {cmp.ci_high:+.1f}] "
            f"({cmp.interval}; {cmp.n_items} items, {seeds}{spread}), "
            f"{cmp.a_only:.4g} items only {name_a} gets right and {cmp.b_only:.4g} only {name_b}, "
            f"p = {cmp.p:.3g} ({cmp.p_kind}); this budget detects a difference of {cmp.mdd:.1f} points "
            f"with {100 * cmp.power:.0f}% power. Verdict: **{cmp.verdict(claim, margin)}**")


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
