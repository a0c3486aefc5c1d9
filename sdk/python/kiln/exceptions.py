"""Exceptions raised by the kiln SDK.

Every error kilnd answers with (``{"error": {"code", "message"}}``) becomes an
:class:`APIError` subclass chosen by its code; failures to reach kilnd are
:class:`ConnectionError`, anything that ran out of time is a
:class:`TimeoutError` (also a subclass of the built-in ``TimeoutError``).
"""
from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Dict, Optional, Type

if TYPE_CHECKING:  # pragma: no cover
    from .models import CommandResult


class KilnError(Exception):
    """The base of every exception this package raises."""


class APIError(KilnError):
    """kilnd answered with an error.

    Attributes: ``status`` (the HTTP status), ``code`` (kilnd's error code,
    e.g. ``"not_found"``) and ``message`` (kilnd's explanation).
    """

    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        super().__init__(f"{message} ({status} {code})" if status or code else message)
        self.message = message
        self.status = status
        self.code = code


class BadRequestError(APIError):
    """400 ``bad_request`` (and 405, 422): kilnd refused the request as malformed."""


class AuthenticationError(APIError):
    """401 ``unauthorized``: the token is missing or unknown."""


class ForbiddenError(APIError):
    """403 ``forbidden``: the guest refused (permissions, read-only file system)."""


class NotFoundError(APIError):
    """404 ``not_found``: no such sandbox, process, file or endpoint."""


class ConflictError(APIError):
    """409 ``conflict``: e.g. the process has ended or its stdin is closed."""


class SandboxPausedError(ConflictError):
    """409 ``sandbox_paused``: the sandbox is paused; ``resume()`` it first."""


class TooLargeError(APIError):
    """413 ``too_large``: a body or a file over kilnd's caps."""


class QuotaError(APIError):
    """429 ``quota``: over the tenant's quotas or kilnd's capacity."""


class BusyError(APIError):
    """429 ``busy``: try again shortly (stdin or signals still waiting)."""


class UnavailableError(APIError):
    """503 ``unavailable``: kilnd is stopping or full of pending work."""


class ServerError(APIError):
    """500 ``internal``: kilnd failed."""


class SandboxError(APIError):
    """The sandbox itself failed (did not boot, stopped answering)."""


class BootFailedError(SandboxError):
    """500 ``boot_failed``: the sandbox did not boot."""


class SandboxUnreachableError(SandboxError):
    """502 ``sandbox_unreachable``: the sandbox's agent does not answer."""


class ConnectionError(KilnError, builtins.ConnectionError):
    """kilnd could not be reached (no socket, refused, broken connection)."""


class TimeoutError(KilnError, builtins.TimeoutError):
    """A request or a wait ran out of time."""


class CommandTimeoutError(TimeoutError):
    """The command's ``timeout`` passed: kilnd killed it."""


class CommandError(KilnError):
    """The command ended without an exit status (its sandbox ended, kilnd stopped...)."""


class CommandExitError(KilnError):
    """The command exited with a non-zero status (or was killed by a signal).

    ``result`` is the whole :class:`~kiln.CommandResult`; ``stdout``,
    ``stderr``, ``exit_code`` and ``signal`` are its fields.
    """

    def __init__(self, result: "CommandResult") -> None:
        what = (f"signal {result.signal}" if result.signal else f"exit code {result.exit_code}")
        tail = result.stderr.strip()[-500:]
        super().__init__(f"command exited with {what}" + (f": {tail}" if tail else ""))
        self.result = result

    @property
    def stdout(self) -> str:
        return self.result.stdout

    @property
    def stderr(self) -> str:
        return self.result.stderr

    @property
    def exit_code(self) -> int:
        return self.result.exit_code

    @property
    def signal(self) -> int:
        return self.result.signal


_BY_CODE: Dict[str, Type[APIError]] = {
    "bad_request": BadRequestError,
    "method_not_allowed": BadRequestError,
    "idempotency_mismatch": BadRequestError,
    "unauthorized": AuthenticationError,
    "forbidden": ForbiddenError,
    "not_found": NotFoundError,
    "command_not_found": NotFoundError,
    "template_not_found": NotFoundError,
    "command_not_runnable": ForbiddenError,
    "conflict": ConflictError,
    "sandbox_paused": SandboxPausedError,
    "too_large": TooLargeError,
    "quota": QuotaError,
    "busy": BusyError,
    "unavailable": UnavailableError,
    "internal": ServerError,
    "boot_failed": BootFailedError,
    "sandbox_unreachable": SandboxUnreachableError,
}

_BY_STATUS: Dict[int, Type[APIError]] = {
    400: BadRequestError, 401: AuthenticationError, 403: ForbiddenError, 404: NotFoundError,
    405: BadRequestError, 409: ConflictError, 413: TooLargeError, 422: BadRequestError,
    429: QuotaError, 502: SandboxUnreachableError, 503: UnavailableError,
}


def error_for(status: int, code: Optional[str], message: str) -> APIError:
    """The exception for an error answer of kilnd."""
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status) or (
        ServerError if status >= 500 else APIError)
    return cls(message, status=status, code=code or "")
