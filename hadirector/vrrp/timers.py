"""VRRP timer formulas, as pure functions of priority and interval (seconds).

RFC 5798 6.1 (v3) scales the skew with the master's advertisement interval so that a
higher-priority backup always answers first, whatever the interval:

    Skew_Time            = ((256 - Priority) * Master_Adver_Interval) / 256
    Master_Down_Interval = (3 * Master_Adver_Interval) + Skew_Time

RFC 3768 6.1 (v2) uses a fixed skew of up to one second:

    Skew_Time            = (256 - Priority) / 256
    Master_Down_Interval = (3 * Advertisement_Interval) + Skew_Time

RFC 5798 6.4.2 / 6.4.3 set Master_Adver_Interval from whatever the master advertises
(up to 40.95 s). Adopted as is, one spoofed or mistyped advert carrying 40.95 s makes
every backup wait 3 x 40.95 s + Skew_Time (~140 s) before it declares the master down,
and nobody holds the VIP meanwhile. ``bounded_adver_interval`` keeps the adopted value
within a factor ``INTERVAL_BOUND_FACTOR`` of our own configured interval:

* upper bound 4 x configured: the outage after such an advert is at most
  3 x 4 x configured + Skew_Time (1.3 s at 0.1 s, 12.6 s at the default 1 s), and a
  genuine master advertising up to 3 x 4 = 12 x our interval is still followed without a
  spurious takeover (Master_Down_Interval stays longer than its interval), so a rolling
  interval change by a factor of 10 (1 s -> 0.1 s) does not flap;
* lower bound configured / 4: a tiny interval (10 ms from a 1 s router) would make our
  Master_Down_Timer fire on a few milliseconds of scheduling jitter; bounding it only
  makes the takeover after a real failure slower, never wrong.

Outside the window the value is clamped (not ignored: the advert still proves a live
master) and the machine reports it. This sits between the two RFCs: RFC 3768 7.1 drops
(and logs as a misconfiguration) any advert whose interval differs from ours, RFC 5798
adopts the master's interval whatever it is.
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


INTERVAL_BOUND_FACTOR = 4


def bounded_adver_interval(advertised: float, configured: float) -> float:
    """The Master_Adver_Interval to adopt from an advert: ``advertised`` clamped to
    [configured / 4, configured * 4] (see the module docstring for why)."""
    low, high = configured / INTERVAL_BOUND_FACTOR, configured * INTERVAL_BOUND_FACTOR
    return min(max(advertised, low), high)
