"""The one errno vocabulary of the probes, and which errnos are the director's own.

A probe that fails with EMFILE, ENFILE, ENOBUFS or ENOMEM could not run: the director is
out of descriptors, socket buffers or memory, and the server was never asked. Such a
result is *inconclusive* (issue 13): the policy counts it toward neither rise nor fall.
Every probe module imports this at load time: under EMFILE an import inside an error
path would itself fail (it has to open the module's file).
"""

from __future__ import annotations

import errno

from hadirector.health.policy import ProbeResult

# The director, not the server: out of descriptors (process, system), socket buffers or
# memory. Such a probe is inconclusive.
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# The same, as the reasons ``os_reason`` gives them: for probes that carry a reason
# string from a socket helper up to their ProbeResult (dns, udp).
LOCAL_REASONS = frozenset(errno.errorcode[code].lower() for code in LOCAL_ERRNOS)


def os_reason(exc: OSError) -> str:
    return errno_reason(exc.errno, exc)


def errno_reason(code: int | None, exc: object = None) -> str:
    if code == errno.ECONNREFUSED:
        return "refused"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    if code == errno.ECONNRESET:
        return "reset"
    if code == errno.EADDRNOTAVAIL:
        return "address not available"
    if code is not None and code in errno.errorcode:
        return errno.errorcode[code].lower()
    return f"error: {exc}"


def os_result(exc: OSError, elapsed: float) -> ProbeResult:
    return ProbeResult(False, os_reason(exc), elapsed, inconclusive=exc.errno in LOCAL_ERRNOS)


def failure_reason(exc: Exception) -> str:
    """Why a probe's exchange ended early, as its detail: "timeout", an errno's reason,
    or "error: Type: message" for anything else -- a probe never raises (but for
    cancellation): a bug in it is a failed check, not a crash."""
    if isinstance(exc, TimeoutError):        # first: it is an OSError, without an errno
        return "timeout"
    if isinstance(exc, OSError):
        return os_reason(exc)
    return f"error: {type(exc).__name__}: {exc}"


def failed(exc: Exception, elapsed: float) -> ProbeResult:
    """``failure_reason`` as a failed result, inconclusive for the director's own errnos."""
    return ProbeResult(False, failure_reason(exc), elapsed,
                       inconclusive=isinstance(exc, OSError) and exc.errno in LOCAL_ERRNOS)
