"""Paired comparison of two systems on the same queries: is a change in a measure more than noise?

A study row that differs from its reference by half a point of nDCG@10 on 43 DL19 queries may be chance.
For each pair of runs we report the mean per-query difference, a 95% bootstrap confidence interval of it
(percentile method) and the two-sided p-value of a paired randomisation (sign-flip) test, the test IR
evaluations recommend for this (Smucker, Allan, Carterette, CIKM 2007). With up to
:data:`EXACT_LIMIT` queries every sign pattern is enumerated, so the p-value is exact; beyond that it is
estimated from seeded random patterns (never below 1 / (samples + 1)), so the same runs always print the
same figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np

EXACT_LIMIT = 16
"""Up to this many queries the randomisation test enumerates all 2**n sign patterns."""


@dataclass(frozen=True)
class PairedComparison:
    queries: int
    mean_difference: float
    """Mean over queries of ``system - reference``."""
    ci_low: float
    ci_high: float
    """95% percentile-bootstrap interval of the mean difference."""
    p_value: float
    """Two-sided paired randomisation test: the share of sign patterns whose mean difference is at least as
    far from zero as the observed one."""

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def describe(self) -> str:
        """``+0.0012 [-0.0040, +0.0065], p 0.64``: the form the benchmark tables print."""
        return f"{self.mean_difference:+.4f} [{self.ci_low:+.4f}, {self.ci_high:+.4f}], p {self.p_value:.2f}"


def paired_comparison(reference: Mapping[str, float], system: Mapping[str, float], samples: int = 10_000,
                      seed: int = 0, confidence: float = 0.95) -> PairedComparison:
    """Compare per-query scores ``{qid: value}`` of ``system`` against ``reference``.

    The queries are the union of both mappings; a query one of them lacks scores 0 there, as a judged
    query missing from a run does in the aggregate (:func:`~csplade_pyserini.evaluate.measures.evaluate_run`).
    """
    qids = sorted(set(reference) | set(system))
    if not qids:
        raise ValueError("no queries to compare")
    diffs = np.array([system.get(q, 0.0) - reference.get(q, 0.0) for q in qids], dtype=np.float64)
    n = len(diffs)
    observed = float(diffs.mean())
    rng = np.random.default_rng(seed)
    # bootstrap: resample queries with replacement, in chunks to bound memory on large topic sets
    means = np.concatenate([diffs[rng.integers(0, n, size=(min(1000, samples - start), n))].mean(axis=1)
                            for start in range(0, samples, 1000)])
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    # randomisation: under the null hypothesis each query's difference is equally likely to have either sign
    if n <= EXACT_LIMIT:
        patterns = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1) * 2 - 1
    else:
        patterns = rng.choice(np.array([-1, 1]), size=(samples, n))
    flipped = np.abs((patterns * diffs).mean(axis=1))
    # a small tolerance so that patterns equal to the observed mean up to rounding count as "as extreme"
    extreme = int((flipped >= abs(observed) - 1e-12).sum())
    # sampled: the observed pattern counts as one of the samples, so an estimate is never 0 (Phipson & Smyth)
    p_value = extreme / len(patterns) if n <= EXACT_LIMIT else (extreme + 1) / (samples + 1)
    return PairedComparison(n, observed, float(low), float(high), p_value)
