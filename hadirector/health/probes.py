"""Health probes: TCP connect, HTTP(S) GET, external script.

Each probe is one coroutine that returns ``ProbeResult(ok, detail, elapsed)``. They hold
no policy (rise/fall lives in ``policy.py``), never raise (every failure becomes a
result whose ``detail`` is the reason: "refused", "timeout", "status 503",
"body mismatch", "exit 1", ...), and never outlive their timeout: the whole probe --
connect, TLS, request, body, process -- runs under one ``asyncio.timeout``.
Cancellation (the runner stopping) is the one thing that propagates.

HTTP uses aiohttp with one ``ClientSession`` per source address (``HttpClients``), so
ten thousand checks a second do not build ten thousand connectors or SSL contexts.
The connector closes each connection after its request (``force_close``): a check must
open a new connection each time, or a server whose listener died would keep passing on
an old keep-alive connection. aiohttp is imported by the first HTTP check, not with
this module: an agent without HTTP checks does not pay its ~12 MB and start-up time.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import ipaddress
import os
import re
import signal
import socket
import ssl
from collections.abc import Sequence

from hadirector.health.policy import ProbeResult
from hadirector.model import (
    DnsProbe, HealthCheck, HttpProbe, IPAddress, PingProbe, ScriptProbe, SmtpProbe, TcpProbe, UdpProbe,
)

TYPE_CHECKING = False   # typing.TYPE_CHECKING; aiohttp for annotations only (see above)
if TYPE_CHECKING:
    import aiohttp

MAX_BODY = 4 * 1024 * 1024     # bytes read for a body regex or digest
USER_AGENT = "hadirector-healthcheck"

# Linux: bind() picks no port until connect(), so a source address shared by many
# checks does not run out of ports for one destination only.
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def _os_reason(exc: OSError) -> str:
    code = exc.errno
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


def _family(addr: IPAddress | str) -> int:
    if isinstance(addr, str):
        return socket.AF_INET6 if ":" in addr else socket.AF_INET
    return socket.AF_INET6 if addr.version == 6 else socket.AF_INET


# --- TCP ------------------------------------------------------------------------------


async def tcp_probe(addr: IPAddress | str, port: int, timeout: float,
                    bind_to: IPAddress | str | None = None) -> ProbeResult:
    """Healthy when a TCP connection to ``addr:port`` completes within ``timeout``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sock: socket.socket | None = None
    try:
        sock = socket.socket(_family(addr), socket.SOCK_STREAM)
        sock.setblocking(False)
        if bind_to is not None:
            sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((str(bind_to), 0))
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (addr if isinstance(addr, str) else str(addr), port))
        return ProbeResult(True, "connected", loop.time() - start)
    except TimeoutError:
        return ProbeResult(False, "timeout", loop.time() - start)
    except OSError as exc:
        return ProbeResult(False, _os_reason(exc), loop.time() - start)
    except Exception as exc:    # never raise: a probe bug is a failed check, not a crash
        return ProbeResult(False, f"error: {type(exc).__name__}: {exc}", loop.time() - start)
    finally:
        if sock is not None:
            sock.close()


# --- HTTP -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _body_regex(pattern: str) -> re.Pattern[bytes]:
    return re.compile(pattern.encode())


class HttpClients:
    """Shared aiohttp sessions (one per source address) and SSL contexts.

    Create inside the running loop; ``await close()`` when done.
    """

    def __init__(self) -> None:
        self._sessions: dict[str | None, aiohttp.ClientSession] = {}
        self._contexts: dict[tuple[bool, str | None], ssl.SSLContext | bool] = {}

    def session(self, bind_to: IPAddress | str | None = None) -> aiohttp.ClientSession:
        key = None if bind_to is None else str(bind_to)
        s = self._sessions.get(key)
        if s is None or s.closed:
            import aiohttp

            connector = aiohttp.TCPConnector(
                limit=0,                   # the runner bounds concurrency
                force_close=True,          # a new connection per check (see module doc)
                local_addr=None if key is None else (key, 0),
                use_dns_cache=False,       # targets are addresses; nothing to resolve
            )
            s = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),   # asyncio.timeout bounds it
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
                # Ask for the body as is (no Accept-Encoding): a digest must match the
                # one keepalived's genhash computes over an unencoded response.
                skip_auto_headers=("Accept-Encoding",),
                auto_decompress=False,
                trust_env=False,           # never go through a proxy from the environment
            )
            self._sessions[key] = s
        return s

    def ssl_context(self, verify: bool, ca_file: str | None) -> ssl.SSLContext | bool:
        key = (verify, ca_file)
        ctx = self._contexts.get(key)
        if ctx is None:
            if not verify:
                ctx = False                # aiohttp: no certificate verification
            else:
                ctx = ssl.create_default_context(cafile=ca_file)
            self._contexts[key] = ctx
        return ctx

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            await s.close()


def _http_reason(exc: BaseException) -> str:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"tls: {getattr(exc.certificate_error, 'verify_message', None) or 'certificate verify failed'}"
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return "tls: handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _os_reason(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "bad body"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "bad response"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, OSError):
        return _os_reason(exc)
    return f"error: {type(exc).__name__}: {exc}"


async def _read_body(resp: aiohttp.ClientResponse) -> bytes | None:
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def http_probe(addr: IPAddress | str, port: int, probe: HttpProbe, timeout: float,
                     bind_to: IPAddress | str | None = None,
                     clients: HttpClients | None = None) -> ProbeResult:
    """GET ``probe.path``; healthy when the status is in ``probe.status_codes`` and
    the body matches ``body_regex`` and/or ``digest`` (hex MD5, keepalived's HTTP_GET)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    own = clients is None
    if clients is None:
        clients = HttpClients()
    try:
        ip = ipaddress.ip_address(addr)
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        url = f"{'https' if probe.tls else 'http'}://{host}:{port}{probe.path}"
        kwargs: dict = {"allow_redirects": False}
        if probe.host:
            kwargs["headers"] = {"Host": probe.host}
        if probe.tls:
            kwargs["ssl"] = clients.ssl_context(probe.verify_tls, probe.ca_file)
            if probe.host:
                # SNI and certificate name follow the virtual host, not the address.
                kwargs["server_hostname"] = probe.host
        async with asyncio.timeout(timeout):
            async with clients.session(bind_to).get(url, **kwargs) as resp:
                status = resp.status
                if not probe.accepts(status):
                    return ProbeResult(False, f"status {status}", loop.time() - start)
                if probe.body_regex is not None or probe.digest is not None:
                    body = await _read_body(resp)
                    if body is None:
                        return ProbeResult(False, "body too large", loop.time() - start)
                    if probe.body_regex is not None and not _body_regex(probe.body_regex).search(body):
                        return ProbeResult(False, "body mismatch", loop.time() - start)
                    if probe.digest is not None and hashlib.md5(body).hexdigest() != probe.digest.lower():
                        return ProbeResult(False, "digest mismatch", loop.time() - start)
        return ProbeResult(True, f"status {status}", loop.time() - start)
    except TimeoutError:
        return ProbeResult(False, "timeout", loop.time() - start)
    except Exception as exc:
        return ProbeResult(False, _http_reason(exc), loop.time() - start)
    finally:
        if own:
            await clients.close()


# --- script ---------------------------------------------------------------------------


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def script_probe(argv: Sequence[str], timeout: float, dynamic: bool = False) -> ProbeResult:
    """Run ``argv`` (no shell); healthy on exit 0. ``dynamic`` (keepalived's
    misc_dynamic): exit 2-255 is healthy too, with weight code - 2 (``result.weight``).

    The script runs in its own session (process group), so on timeout or cancellation
    the whole group is killed -- a shell script's children too -- and reaped.
    Output goes to /dev/null: a pipe held open by a leftover grandchild would make a
    passing script look like a timeout.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    proc: asyncio.subprocess.Process | None = None
    try:
        async with asyncio.timeout(timeout):
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True, close_fds=True)
            code = await proc.wait()
    except TimeoutError:
        return ProbeResult(False, "timeout", loop.time() - start)
    except FileNotFoundError:
        return ProbeResult(False, "not found", loop.time() - start)
    except PermissionError:
        return ProbeResult(False, "permission denied", loop.time() - start)
    except OSError as exc:
        return ProbeResult(False, _os_reason(exc), loop.time() - start)
    except Exception as exc:
        return ProbeResult(False, f"error: {type(exc).__name__}: {exc}", loop.time() - start)
    finally:
        if proc is not None and proc.returncode is None:
            _kill_group(proc.pid)
            # Reap it so no zombie is left; SIGKILL makes this quick. Shielded so a
            # cancellation arriving now still lets the reaping finish.
            await asyncio.shield(proc.wait())
    elapsed = loop.time() - start
    if code == 0:
        return ProbeResult(True, "exit 0", elapsed)
    if dynamic and 2 <= code <= 255:
        return ProbeResult(True, f"exit {code}", elapsed, weight=code - 2)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return ProbeResult(False, f"killed by {name}", elapsed)
    return ProbeResult(False, f"exit {code}", elapsed)


# --- dispatch -------------------------------------------------------------------------


async def run_check(check: HealthCheck, addr: IPAddress, port: int,
                    clients: HttpClients | None = None) -> ProbeResult:
    """Run the probe ``check`` configures against ``addr:port``."""
    probe = check.probe
    if isinstance(probe, TcpProbe):
        return await tcp_probe(addr, port, check.timeout, check.bind_to)
    if isinstance(probe, HttpProbe):
        return await http_probe(addr, port, probe, check.timeout, check.bind_to, clients)
    if isinstance(probe, ScriptProbe):
        return await script_probe(probe.command, check.timeout, probe.dynamic)
    # The other probes' modules import this one (its errno vocabulary): imported here.
    if isinstance(probe, DnsProbe):
        from hadirector.health.dns import dns_probe
        return await dns_probe(addr, port, probe, check.timeout, check.bind_to)
    if isinstance(probe, UdpProbe):
        from hadirector.health.udp import udp_probe
        return await udp_probe(addr, port, probe, check.timeout, check.bind_to)
    if isinstance(probe, PingProbe):
        from hadirector.health.ping import ping_probe
        return await ping_probe(addr, check.timeout, check.bind_to)
    if isinstance(probe, SmtpProbe):
        from hadirector.health.smtp import smtp_probe
        return await smtp_probe(addr, port, probe, check.timeout, check.bind_to)
    return ProbeResult(False, f"unsupported probe {type(probe).__name__}", 0.0)
