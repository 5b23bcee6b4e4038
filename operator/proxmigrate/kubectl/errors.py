"""Exit statuses a script can test, and the error that carries one."""

from __future__ import annotations

from proxmigrate.api.enums import DrainPhase

# A script tells "the drain did not end well" from "could not ask".
EXIT_OK = 0  # done; a drain waited for ended Drained (or Returned: its guests are home)
EXIT_ERROR = 1  # the request failed: API server, kubeconfig, object or node not found
EXIT_USAGE = 2  # bad flags or arguments
EXIT_NOT_DRAINED = 3  # the drain ended Failed, Blocked or Cancelled; a plan leaves VMs behind
EXIT_TIMEOUT = 4  # --timeout passed before the drain ended (it keeps running)


class PluginError(Exception):
    """A problem the user must fix; printed as `error: <message>` with status `code`."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def exit_code(phase: str | None) -> int:
    """EXIT_OK when the drain ended Drained or Returned; EXIT_NOT_DRAINED for Failed,
    Blocked, Cancelled."""
    return EXIT_OK if phase in (DrainPhase.DRAINED, DrainPhase.RETURNED) else EXIT_NOT_DRAINED
