"""Paired comparison: hand-computed values of the bootstrap interval and the randomisation test."""

import pytest

from csplade_pyserini.evaluate.significance import EXACT_LIMIT, paired_comparison


def test_constant_difference_has_a_point_interval_and_the_exact_sign_flip_p():
    # three queries each +0.1: the bootstrap can only draw +0.1; of the 8 sign patterns only all-plus and
    # all-minus reach |mean| 0.1, so p = 2/8
    result = paired_comparison({"a": 0.5, "b": 0.2, "c": 0.0}, {"a": 0.6, "b": 0.3, "c": 0.1})
    assert result.queries == 3
    assert result.mean_difference == pytest.approx(0.1)
    assert result.ci_low == pytest.approx(0.1) and result.ci_high == pytest.approx(0.1)
    assert result.p_value == pytest.approx(0.25)


def test_no_difference_gives_p_one():
    result = paired_comparison({"a": 0.5, "b": 0.2}, {"a": 0.5, "b": 0.2})
    assert result.mean_difference == 0.0 and result.p_value == 1.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)


def test_exact_p_with_unequal_differences():
    # differences +3, +1: patterns (+,+) 2, (+,-) 1, (-,+) -1, (-,-) -2 -> only |2| >= 2: p = 2/4
    result = paired_comparison({"a": 0.0, "b": 0.0}, {"a": 3.0, "b": 1.0})
    assert result.mean_difference == pytest.approx(2.0)
    assert result.p_value == pytest.approx(0.5)
    assert 1.0 <= result.ci_low <= result.ci_high <= 3.0


def test_missing_query_counts_as_zero():
    # the system lacks "b": it scores 0 there (difference -0.4)
    result = paired_comparison({"a": 0.2, "b": 0.4}, {"a": 0.2})
    assert result.queries == 2 and result.mean_difference == pytest.approx(-0.2)


def test_sampled_test_is_seeded_and_never_zero():
    n = EXACT_LIMIT + 4
    reference = {str(i): 0.0 for i in range(n)}
    system = {str(i): 1.0 for i in range(n)}  # every query better: exact p would be 2 / 2**20
    first = paired_comparison(reference, system, samples=2000)
    assert first == paired_comparison(reference, system, samples=2000)
    assert 0 < first.p_value <= 3 / 2001
    assert first.describe().startswith("+1.0000 [+1.0000, +1.0000], p 0.00")


def test_no_queries_is_an_error():
    with pytest.raises(ValueError, match="no queries"):
        paired_comparison({}, {})
