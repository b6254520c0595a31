"""RFC 5798 6.1 / RFC 3768 6.1 timer formulas."""

import pytest

from hadirector.vrrp.timers import master_down_interval, skew_time


def test_skew_time_scales_with_the_master_adver_interval():  # RFC 5798 6.1
    assert skew_time(100, 1.0) == 156 / 256
    assert skew_time(100, 2.0) == 2 * 156 / 256
    assert skew_time(254, 1.0) == 2 / 256


def test_master_down_interval_is_three_intervals_plus_skew():  # RFC 5798 6.1
    assert master_down_interval(100, 1.0) == 3.609375
    assert master_down_interval(200, 0.5) == pytest.approx(1.5 + 56 * 0.5 / 256)


def test_higher_priority_always_has_the_shorter_master_down_interval():  # RFC 5798 6.1
    for interval in (0.01, 0.5, 1.0, 40.95):
        downs = [master_down_interval(p, interval) for p in range(1, 255)]
        assert downs == sorted(downs, reverse=True)
        assert len(set(downs)) == len(downs)


def test_v2_skew_is_a_fraction_of_one_second_whatever_the_interval():  # RFC 3768 6.1
    assert skew_time(100, 5.0, version=2) == 156 / 256
    assert master_down_interval(100, 5.0, version=2) == 15 + 156 / 256
