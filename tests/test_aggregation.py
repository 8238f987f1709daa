"""Tests of the state averaging used by every fedsign strategy."""

import numpy as np
import pytest

from fedsign.aggregation import average_states


def test_weighted_average_of_two_clients():
    first = {"w": np.array([1.0, 2.0], dtype=np.float32), "count": np.array(10, dtype=np.int64)}
    second = {"w": np.array([3.0, 6.0], dtype=np.float32), "count": np.array(20, dtype=np.int64)}
    averaged = average_states([first, second], [1, 3])
    # (1*[1,2] + 3*[3,6]) / 4 = [2.5, 5.0]; counters (10 + 60) / 4 = 17.5 -> rounded to 18.
    np.testing.assert_array_equal(averaged["w"], np.array([2.5, 5.0], dtype=np.float32))
    assert averaged["w"].dtype == np.float32
    assert averaged["count"] == 18
    assert averaged["count"].dtype == np.int64


def test_unweighted_average_is_plain_mean():
    states = [{"w": np.array([0.0])}, {"w": np.array([1.0])}, {"w": np.array([5.0])}]
    assert average_states(states)["w"][0] == pytest.approx(2.0)


def test_average_rejects_empty_and_zero_weights():
    with pytest.raises(ValueError, match="empty"):
        average_states([])
    with pytest.raises(ValueError, match="positive sum"):
        average_states([{"w": np.zeros(1)}], [0])
