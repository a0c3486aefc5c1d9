"""kiln: a Python SDK for kilnd, kiln's per-host daemon of KVM microVM sandboxes.

    from kiln import Sandbox
    with Sandbox.create(image="debian") as sb:
        print(sb.commands.run("echo hi").stdout)
"""
from .async_sandbox import AsyncCommandHandle, AsyncPtyHandle, AsyncSandbox
from .exceptions import (APIError, AuthenticationError, BadRequestError, BootFailedError,
                         BusyError, CommandError, CommandExitError, CommandTimeoutError,
                         ConflictError, ConnectionError, ForbiddenError, KilnError,
                         NotFoundError, QuotaError, SandboxError, SandboxPausedError,
                         SandboxUnreachableError, ServerError, TimeoutError, TooLargeError, UnavailableError)
from .models import CommandResult, EntryInfo, ProcessInfo, SandboxInfo, TemplateInfo
from .sandbox import CommandHandle, PtyHandle, Sandbox

__version__ = "0.1.0"

__all__ = [
    "Sandbox", "AsyncSandbox", "CommandHandle", "AsyncCommandHandle", "PtyHandle",
    "AsyncPtyHandle", "CommandResult",
    "SandboxInfo", "TemplateInfo", "ProcessInfo", "EntryInfo", "KilnError", "APIError", "BadRequestError",
    "AuthenticationError", "ForbiddenError", "NotFoundError", "ConflictError", "TooLargeError",
    "QuotaError", "BusyError", "UnavailableError", "ServerError", "SandboxError",
    "BootFailedError", "SandboxUnreachableError", "SandboxPausedError", "ConnectionError", "TimeoutError",
    "CommandTimeoutError", "CommandError", "CommandExitError",
]
