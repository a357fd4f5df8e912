"""The statistics behind behaviour rules: Fisher's exact test and Benjamini-Hochberg.

A behaviour becomes a rule only when resolved and failed runs really differ in how often they
show it. With a few dozen runs per side, an exact test is the honest one: Fisher's exact test
on the 2x2 table (resolved / failed x did it / did not), two-sided. Many candidate behaviours
are tried on one corpus, so the p-values are corrected with Benjamini-Hochberg (false
discovery rate) over every candidate tested.
"""

from __future__ import annotations

from math import comb


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p-value of Fisher's exact test on the table [[a, b], [c, d]].

    Sums the probabilities of every table with the same margins that is no more likely than
    the observed one (the usual definition, with a small relative tolerance for ties).
    """
    row1, col1, n = a + b, a + c, a + b + c + d
    total = comb(n, col1)
    if total == 0:
        return 1.0

    def probability(x: int) -> float:
        return comb(row1, x) * comb(n - row1, col1 - x) / total

    observed = probability(a)
    low, high = max(0, col1 - (n - row1)), min(row1, col1)
    p = sum(q for x in range(low, high + 1) if (q := probability(x)) <= observed * (1 + 1e-7))
    return min(1.0, p)


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
