"""`PvesimProcess`: run `python -m pvesim serve` as a subprocess for tests, benches, the demo."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

_OPERATOR_DIR = str(Path(__file__).resolve().parent.parent)


class PvesimProcess:
    """Context manager; `args` are extra `serve` flags, e.g. `["--nodes", "3"]`."""

    def __init__(self, *args: str, startup_timeout: float = 10.0) -> None:
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}

    def __enter__(self) -> PvesimProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_OPERATOR_DIR, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pvesim", "serve", *self.args],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("pvesim exited before printing its JSON line")
        self.info = json.loads(line)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        code = self.proc.returncode
        self.proc = None
        return code

    # -- connection details ------------------------------------------------------------------
    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def urls(self) -> list[str]:
        return list(self.info["urls"])

    @property
    def host(self) -> str:
        return str(urllib.parse.urlsplit(self.url).hostname)

    @property
    def port(self) -> int:
        return int(urllib.parse.urlsplit(self.url).port or 443)

    @property
    def token_id(self) -> str:
        return str(self.info["token_id"])

    @property
    def token_user(self) -> str:
        return self.token_id.split("!")[0]

    @property
    def token_name(self) -> str:
        return self.token_id.split("!")[1]

    @property
    def token_secret(self) -> str:
        return str(self.info["token_secret"])

    @property
    def tokens(self) -> dict[str, str]:
        """Every token id (the default root one and `--token`/YAML ones) -> its secret."""
        return dict(self.info["tokens"])

    @property
    def password(self) -> str:
        return str(self.info["password"])

    @property
    def ca_cert(self) -> str:
        return str(self.info["ca_cert"])

    # -- ground truth and faults -------------------------------------------------------------
    def _call(self, method: str, path: str, data: dict[str, Any] | None = None) -> Any:
        context = ssl.create_default_context(cafile=self.ca_cert)
        body = json.dumps(data).encode() if data is not None else None
        error: OSError | None = None
        for base in self.urls:  # any endpoint that is up serves /_sim
            request = urllib.request.Request(
                f"{base}/_sim/{path}",
                data=body,
                method=method,
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, context=context, timeout=30) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError:
                raise
            except urllib.error.URLError as exc:
                error = exc
        raise ConnectionError(f"no pvesim endpoint answered: {error}")

    def state(self) -> dict[str, Any]:
        """`GET /_sim/state`."""
        return dict(self._call("GET", "state"))

    def fault(self, **changes: Any) -> dict[str, Any]:
        """`POST /_sim/faults`, e.g. `fault(node_offline="pve2")` or `fault(api_error_rate=0.1)`."""
        return dict(self._call("POST", "faults", changes))

    def move_vm(self, vmid: int, target: str) -> dict[str, Any]:
        """`POST /_sim/vms/{vmid}/move`: drift behind the operator's back."""
        return dict(self._call("POST", f"vms/{vmid}/move", {"target": target}))
