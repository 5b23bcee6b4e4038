"""What proxmigrate's command lines share: an error is one line on stderr and an exit status
a script can test (2: bad input, 1: a dependency failed); `--debug` shows the traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

USAGE = 2  # bad input: flags, files, values
FAILED = 1  # a dependency failed or refused: an API server, PVE, a port


class CliError(Exception):
    """Bad input or an unreachable dependency, said in one line; `code` is the exit status."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse with its complaint in one line (no usage block) and status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def guarded(prog: str, debug: bool, body: Callable[[], int]) -> int:
    """`body()`'s status; an exception becomes one line on stderr (re-raised with --debug)."""
    try:
        return body()
    except CliError as error:
        if debug:
            raise
        print(f"{prog}: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if debug:
            raise
        print(f"{prog}: {type(error).__name__}: {error} (--debug shows where)", file=sys.stderr)
        return FAILED


def secret_value(what: str, value: str | None, file: str | None, env: str) -> str | None:
    """A secret from its flag, its file flag (`-` is stdin) or the environment variable `env`,
    so that it never has to be on the command line (visible in `ps`)."""
    if file is not None:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text()
        except OSError as error:
            raise CliError(f"{what}: cannot read {file}: {error.strerror}", USAGE) from None
        return text.strip() or None
    return value or os.environ.get(env) or None
