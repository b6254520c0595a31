"""VRRP timer formulas, as pure functions of priority and interval (seconds).

RFC 5798 6.1 (v3) scales the skew with the master's advertisement interval so that a
higher-priority backup always answers first, whatever the interval:

    Skew_Time            = ((256 - Priority) * Master_Adver_Interval) / 256
    Master_Down_Interval = (3 * Master_Adver_Interval) + Skew_Time

RFC 3768 6.1 (v2) uses a fixed skew of up to one second:

    Skew_Time            = (256 - Priority) / 256
    Master_Down_Interval = (3 * Advertisement_Interval) + Skew_Time
"""

from __future__ import annotations


def skew_time(priority: int, master_adver_interval: float, *, version: int = 3) -> float:
    """Seconds a backup waits on top of three intervals; shorter for higher priorities."""
    if version == 2:
        return (256 - priority) / 256          # RFC 3768 6.1
    return ((256 - priority) * master_adver_interval) / 256   # RFC 5798 6.1


def master_down_interval(priority: int, master_adver_interval: float, *, version: int = 3) -> float:
    """Seconds without an advertisement after which a backup declares the master down."""
    return 3 * master_adver_interval + skew_time(priority, master_adver_interval, version=version)
