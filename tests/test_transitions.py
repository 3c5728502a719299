"""Transition finding on synthetic paths with planted changes at known t."""

import math

import pytest

from weightspace.analysis.transitions import find_transitions


def step_path(changes):
    """A path whose value is the number of planted change points at or below t."""

    def evaluate(t):
        return (1 + sum(t >= c for c in changes), 0, 0)

    return evaluate


@pytest.mark.parametrize("change", [0.0137, 0.5, 0.73, 0.9999])
def test_single_transition_located_within_tolerance(change):
    search = find_transitions(step_path([change]), n_steps=16, tolerance=1e-3)
    assert len(search.transitions) == 1
    tr = search.transitions[0]
    assert tr.t_lo < change <= tr.t_hi
    assert tr.width <= 1e-3
    assert tr.before == (1, 0, 0) and tr.after == (2, 0, 0)
    # 17 uniform decodes plus ceil(log2(step / tol)) bisections.
    assert search.decodes == 17 + math.ceil(math.log2((1 / 16) / 1e-3))
    assert search.decodes <= 40


def test_two_changes_in_one_step_both_found():
    search = find_transitions(step_path([0.51, 0.55]), n_steps=16, tolerance=1e-3)
    assert [round(tr.t_hi, 2) for tr in search.transitions] == [0.51, 0.55]
    assert [tr.after for tr in search.transitions] == [(2, 0, 0), (3, 0, 0)]


def test_constant_path_has_no_transitions_and_uniform_cost():
    search = find_transitions(lambda t: (1, 1, 0), n_steps=8)
    assert search.transitions == [] and search.decodes == 9


def test_each_t_evaluated_once():
    calls = []

    def evaluate(t):
        calls.append(t)
        return (1 if t < 0.3 else 2, 0, 0)

    find_transitions(evaluate, n_steps=4, tolerance=1e-2)
    assert len(calls) == len(set(calls))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        find_transitions(lambda t: 0, n_steps=0)
    with pytest.raises(ValueError):
        find_transitions(lambda t: 0, tolerance=0)
