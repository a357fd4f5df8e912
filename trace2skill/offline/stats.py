"""The statistics behind behaviour rules: Fisher's exact test and Benjamini-Hochberg.

A behaviour becomes a rule only when resolved and failed runs really differ in how often they
show it. With a few dozen runs per side, an exact test is the honest one: Fisher's exact test
on the 2x2 table (resolved / failed x did it / did not), two-sided. Many candidate behaviours
are tried on one corpus, so the p-values are corrected with Benjamini-Hochberg (false
discovery rate) over every candidate tested.
"""

from __future__ import annotations

import math


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p-value of Fisher's exact test on the table [[a, b], [c, d]].

    Sums the probabilities of every table with the same margins that is no more likely than
    the observed one (the usual definition, with a small relative tolerance for ties).

    The hypergeometric probabilities are taken in log space (`lgamma`) and summed from the mode
    outwards, stopping once a tail's terms no longer change the sum: exact binomial
    coefficients of a large corpus are huge integers, and summing every table cost
    O(n) bigint products of O(n) digits per candidate behaviour, quadratic in the corpus.
    """
    row1, col1, n = a + b, a + c, a + b + c + d
    low, high = max(0, col1 - (n - row1)), min(row1, col1)
    if low == high:
        return 1.0

    def log_p(x: int) -> float:
        return _log_comb(row1, x) + _log_comb(n - row1, col1 - x) - _log_comb(n, col1)

    bound = log_p(a) + math.log1p(1e-7)
    mode = min(high, max(low, (row1 + 1) * (col1 + 1) // (n + 2)))
    total = 0.0
    for step in (-1, 1):
        x = mode if step == 1 else mode - 1
        while low <= x <= high:
            term = log_p(x)
            if term <= bound:
                value = math.exp(term)
                total += value
                if value <= total * 1e-17:
                    break  # past the mode the terms only shrink: the rest cannot change the sum
            x += step
    return min(1.0, total)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Adjusted p-values (q-values), in the input order, controlling the false discovery rate."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        adjusted[i] = min(1.0, running)
    return adjusted
