"""``hadirector run -c FILE [--log-format json|console] [--log-level LEVEL]``.

Start-up, in this order, each step before anything that has an effect:

1. the command line and HADIRECTOR_LOG_FORMAT (``USAGE``);
2. the privileges: CAP_NET_ADMIN and CAP_NET_RAW (``NO_PRIVILEGE``);
3. the lock, one agent per network namespace (``ALREADY_RUNNING``; ``lock.py``);
4. the VIPs a dead predecessor recorded as its own and left, removed before the
   config and the slow imports (``preflight``, ``vip_record``);
5. the config (``CONFIG_INVALID``);
6. the agent proper (``START_FAILED`` when the host is not ready).

A failure is one ``agent.start_failed`` event with a ``reason`` and one plain line on
stderr, and the exit code from ``hadirector.exitcodes`` — never a traceback (an
unexpected exception is ``INTERNAL_ERROR``, with its traceback at ``--log-level debug``).
"""

from __future__ import annotations

import argparse
import os
import sys

from hadirector.exitcodes import ExitCode, epilog

# Steps 1-4 import nothing heavy: structlog alone (it imports asyncio) costs ~0.1 s,
# pyroute2 and aiohttp several times that, and a dead predecessor's VIP is answering
# beside the peer's until step 4. Hence this copy of hadirector.logging.ENV_FORMAT.
ENV_FORMAT = "HADIRECTOR_LOG_FORMAT"
LOG_FORMATS = ("console", "json", "journal")
# What hadirector.logging accepts: the stdlib's level names (logging not imported either).
LOG_LEVELS = ("CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG", "NOTSET")


def add_arguments_run(parser: argparse.ArgumentParser) -> None:
    from hadirector.cli import DEFAULT_CONFIG

    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="YAML config file")
    # Validated in cmd_run, not with choices=: a bad value is a start failure like any
    # other (one event, one line, exit USAGE), not an argparse usage dump.
    parser.add_argument("--log-format", default=None, metavar="{console,json,journal}",
                        help="override node.log_format (HADIRECTOR_LOG_FORMAT overrides both); "
                             "journal: priority prefixes for journald, as under systemd, where "
                             "JOURNAL_STREAM turns them on for any format (default: node.log_format)")
    parser.add_argument("--log-level", default="info",
                        help="debug, info, warning or error")
    parser.epilog = epilog()


class StartFailed(Exception):
    def __init__(self, code: ExitCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def usage_problem(log_format: str | None, log_level: str, env_format: str | None) -> StartFailed | None:
    """The command line's and the environment's logging options (pure)."""
    if log_format is not None and log_format.lower() not in LOG_FORMATS:
        return StartFailed(ExitCode.USAGE, "invalid_log_format",
                           f"--log-format {log_format!r}: expected console, json or journal")
    if env_format and env_format.lower() not in LOG_FORMATS:
        return StartFailed(ExitCode.USAGE, "invalid_log_format",
                           f"{ENV_FORMAT}={env_format!r}: expected console, json or journal")
    if log_level.upper() not in LOG_LEVELS:
        return StartFailed(ExitCode.USAGE, "invalid_log_level",
                           f"--log-level {log_level!r}: expected debug, info, warning or error")
    return None


def cmd_run(args: argparse.Namespace) -> int:
    log = None
    lock = None
    stale = []              # a dead predecessor's VIPs, removed before the config is read
    stage = "start"
    logging_ready = False
    try:
        problem = usage_problem(args.log_format, args.log_level, os.environ.get(ENV_FORMAT))
        if problem is not None:
            raise problem
        lock = _preflight_and_lock()
        from hadirector.agent.lock import netns_cookie
        from hadirector.agent.preflight import log_stale_vips, release_recorded_vips
        from hadirector.agent.vip_record import VipRecord, record_path

        record = VipRecord(record_path(lock.directory, lock.netns), netns_cookie())
        stale = release_recorded_vips(record)
        loaded = _load(args.config)
        config = loaded.config
        from hadirector.logging import configure_logging, get_logger

        configure_logging(args.log_format or config.node.log_format, level=args.log_level)
        logging_ready = True
        log = get_logger("hadirector.agent")
        log_stale_vips(stale, log)
        if lock.squatter is not None:
            log.warning("agent.lock_beacon_squatted", beacon=f"@{lock.beacon}", lock=lock.path,
                        holder_pid=lock.squatter.pid, holder_uid=lock.squatter.uid,
                        reason="name_taken_by_another_process")
        for w in loaded.warnings:      # valid, so not fatal; `hadirector check --strict` refuses them
            log.warning("config.warned", file=w.source, line=w.line, column=w.column, key=w.path,
                        detail=w.message, reason="config_warning")
        stage = "agent"
        return _run_agent(config, log, lock, record)
    except StartFailed as e:
        return _fail(args, log, e.code, e.reason, e.message, logging_ready=logging_ready,
                     stale=stale)
    except _Crashed as e:
        # After agent.started: not a start failure; the agent logged its own stop.
        log.error("agent.crashed", reason="internal_error", detail=e.detail,
                  exit_code=int(ExitCode.INTERNAL_ERROR))
        from hadirector.logging import priority_prefix

        print(f"{priority_prefix('error')}hadirector run: {e.detail}", file=sys.stderr)
        return ExitCode.INTERNAL_ERROR
    except OSError as e:
        return _fail(args, log, ExitCode.START_FAILED, "os_error",
                     f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""),
                     logging_ready=logging_ready)
    except Exception as e:  # noqa: BLE001 - a bug still gets one line, not a traceback
        return _fail(args, log, ExitCode.INTERNAL_ERROR, "internal_error",
                     f"{type(e).__name__}: {e} (during {stage}; --log-level debug for the traceback)",
                     exc=e, logging_ready=logging_ready)
    finally:
        if lock is not None:
            lock.close()


def _preflight_and_lock():
    from hadirector.agent.lock import AgentLock, AlreadyRunning, LockUnusable
    from hadirector.agent.preflight import own_missing_capabilities

    missing = own_missing_capabilities()
    if missing:
        raise StartFailed(ExitCode.NO_PRIVILEGE, "no_privilege",
                          f"needs root or {' and '.join(missing)} (running as uid {os.getuid()})")
    try:
        return AgentLock().acquire()
    except AlreadyRunning as e:
        raise StartFailed(ExitCode.ALREADY_RUNNING, "already_running",
                          f"already running: {e}") from None
    except LockUnusable as e:
        raise StartFailed(ExitCode.START_FAILED, "lock_unusable", f"lock: {e}") from None


def _load(path: str):
    from hadirector.config import ConfigError
    from hadirector.config.loader import load

    try:
        return load(path)
    except ConfigError as e:
        first = str(e.issues[0]) if e.issues else str(e)
        more = f" (and {len(e.issues) - 1} more; see hadirector check)" if len(e.issues) > 1 else ""
        # The loader reports a file it cannot read as an issue at line 0.
        unreadable = bool(e.issues) and all(i.line == 0 and "cannot read" in i.message for i in e.issues)
        raise StartFailed(ExitCode.CONFIG_INVALID, "unreadable_config" if unreadable else "invalid_config",
                          first + more) from None
    except OSError as e:
        raise StartFailed(ExitCode.CONFIG_INVALID, "unreadable_config",
                          f"cannot read {path}: {e.strerror or e}") from None


class _Crashed(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _run_agent(config, log, lock, record=None) -> int:
    import asyncio

    from hadirector.agent.agent import Agent, AgentError

    agent: Agent | None = None

    async def main() -> int:
        nonlocal agent
        loop = asyncio.get_running_loop()
        fd = lock.fileno()              # the beacon (None: squatted)

        def someone_asked() -> None:
            try:
                lock.accept_pending()
            except OSError:
                loop.remove_reader(fd)                  # EMFILE ...: pause, do not spin
                loop.call_later(1.0, loop.add_reader, fd, someone_asked)

        if fd is not None:
            loop.add_reader(fd, someone_asked)
        agent = Agent(config, log=log, vip_record=record)
        if _ipvs_missing(config):
            # Prepared before the machines start: its instances start straight in FAULT.
            agent.components.extend(_components(config))
        else:
            # Built once the machines run, their takeover held until it is prepared.
            agent.build_components = lambda: _components(config)
        try:
            return await agent.run()
        finally:
            if fd is not None:
                loop.remove_reader(fd)

    try:
        return asyncio.run(main())
    except AgentError as e:
        raise StartFailed(ExitCode.START_FAILED, e.reason, str(e)) from None
    except Exception as e:
        if agent is not None and agent.started:
            raise _Crashed(f"{type(e).__name__}: {e}") from e
        raise


def _components(config) -> list:
    """The LVS side, the API and (with ``scale_out:``) the announce gate, in start order."""
    from hadirector.agent.api_component import ApiComponent
    from hadirector.agent.lvs import LvsController

    # Always present: idle (no IPVS netlink) until the config has LVS parts, so a
    # reload can add the first virtual service.
    lvs = LvsController(config)
    components = [lvs, ApiComponent(lvs)]
    if config.scale_out is not None:
        # Last: started after the LVS side, stopped before it (withdraw, then tear down).
        from hadirector.agent.scaleout import ScaleOutComponent

        components.append(ScaleOutComponent(lvs))
    return components


def _ipvs_missing(config) -> bool:
    """Does the config need IPVS on a kernel that has none? One generic netlink
    question (kernel/genl.py); when it cannot be asked, the answer is yes: the LVS side
    is then prepared first, as on a host without IPVS."""
    from hadirector.model import needs_ipvs

    if not needs_ipvs(config):
        return False
    from hadirector.kernel.genl import family_id

    try:
        return family_id("IPVS") is None
    except OSError:
        return True


def _fail(args, log, code: ExitCode, reason: str, message: str, *,
          exc: BaseException | None = None, logging_ready: bool = False, stale=()) -> int:
    """One ``agent.start_failed`` event and one plain stderr line; returns ``code``.
    (Preceded by ``vrrp.stale_vip_removed`` for a dead predecessor's VIPs that went
    before the config was found invalid.)"""
    from hadirector.logging import configure_logging, get_logger, priority_prefix

    level = args.log_level if reason != "invalid_log_level" else "info"
    if not logging_ready:
        # Before the config: the command line's (or the environment's) format, where valid.
        fmt = args.log_format if (args.log_format or "").lower() in LOG_FORMATS else None
        if (os.environ.get(ENV_FORMAT) or "").lower() not in LOG_FORMATS:
            os.environ.pop(ENV_FORMAT, None)    # it is the problem; it must not hide the report
        configure_logging(fmt, level=level)
    log = log or get_logger("hadirector.agent")
    if stale and not logging_ready:
        # Removed before the config turned out invalid: still said, before the failure.
        from hadirector.agent.preflight import log_stale_vips
        log_stale_vips(stale, log)
    extra = {}
    if exc is not None and level.lower() == "debug":
        extra["exc_info"] = exc
    log.error("agent.start_failed", reason=reason, detail=message, exit_code=int(code), **extra)
    print(f"{priority_prefix('error')}hadirector run: {message}", file=sys.stderr, flush=True)
    return int(code)
