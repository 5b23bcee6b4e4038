"""Provision the binaries and files the demo, the tests and the benchmarks run, on demand.

`python hack/provision.py demo` (or unit, e2e, bench) makes sure every component that
target needs is there, `python hack/provision.py path NAME...` prints where each one is
(provisioning it first if needed). Each component comes from the first of:
  1. the file its environment variable names (e.g. PROXMIGRATE_KUBE_APISERVER), which must
     be the pinned version: anything else is refused with one line saying why;
  2. the cache, `$PROXMIGRATE_CACHE` (default ~/.cache/proxmigrate), keyed by version;
  3. PATH, when the binary there reports the pinned version;
  4. a build (or download) into the cache: one line per component says what it is, why it
     is needed, how long it should take; its output goes to a log under the cache's logs/,
     shown in full only when it fails. Independent builds run concurrently
     (`PROXMIGRATE_JOBS`, default 2: measured faster on 2 cores, see hack/README.md).

Adding a component is one `Component(...)` entry in COMPONENTS, plus its build script in
hack/ if none fits. The entry says which targets need it, how long it takes on 2 cores
with cold caches, how to ask a binary its version (`Probe`) or check a file (`Sha256`),
and the build command, which writes the result to `{out}` (moved into place only once
it passes the check, so an interrupted build leaves nothing half-made).

Standard library only: it runs before the virtualenv exists too.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fcntl
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, cast

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("demo", "unit", "e2e", "bench", "bench-quick")


@dataclass(frozen=True)
class Probe:
    """A binary is the pinned build when `binary *args` prints `token` as a word."""

    args: tuple[str, ...]
    token: str

    def mismatch(self, path: Path) -> str | None:
        """None when `path` is the pinned version, else what it says it is."""
        try:
            result = subprocess.run(
                [str(path), *self.args],
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"cannot run it ({error})"
        output = result.stdout + result.stderr
        if self.found(output):
            return None
        first = output.strip().splitlines()[0] if output.strip() else "(no output)"
        return f"`{path.name} {' '.join(self.args)}` says {first!r}, not {self.token}"

    def found(self, output: str) -> bool:
        return self.token in re.split(r"[\s,()]+", output)


@dataclass(frozen=True)
class AnyVersion(Probe):
    """A system package's binary, whichever version the distribution ships: `token` is a
    regular expression its output must contain."""

    def found(self, output: str) -> bool:
        return re.search(self.token, output) is not None


@dataclass(frozen=True)
class Sha256:
    """A file is the pinned one when its sha256 is `digest`."""

    digest: str

    def mismatch(self, path: Path) -> str | None:
        try:
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as error:
            return f"cannot read it ({error.strerror})"
        return None if actual == self.digest else f"its sha256 is {actual}, not {self.digest}"


@dataclass(frozen=True)
class Component:
    """One thing to provision; see the module docstring."""

    name: str  # the binary's name (PATH lookup, cache file `<name>-<version>`)
    version: str  # pinned; the cache key
    why: str  # what it is for, shown while it builds
    targets: frozenset[str]  # which of TARGETS need it
    seconds: int  # expected build time on 2 idle cores, empty caches (hack/README.md)
    check: Probe | Sha256
    build: tuple[str, ...]  # argv run in the repository; {out} and {version} are filled in
    env: str = ""  # variable naming a prebuilt one; default PROXMIGRATE_<NAME>
    cache_file: str = ""  # file name in the cache; default bin/<name>-<version>
    on_path: bool = True  # look for `name` on PATH
    after: str = ""  # build right after this component when both are missing (shared packages)

    @property
    def env_var(self) -> str:
        return self.env or "PROXMIGRATE_" + re.sub(r"\W", "_", self.name).upper()

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


def _go(*args: str) -> tuple[str, ...]:
    return ("bash", *args, "{version}", "{out}")


COMPONENTS: tuple[Component, ...] = (
    Component(
        name="kube-apiserver",
        version="v1.35.4",
        why="the Kubernetes API server the operator runs against",
        targets=frozenset({"demo", "e2e", "bench"}),
        seconds=310,  # measured cold on 2 idle cores, beside etcd (hack/README.md)
        check=Probe(("--version",), "v1.35.4"),  # "Kubernetes v1.35.4"
        build=_go("hack/build-control-plane.sh", "kube-apiserver"),
    ),
    Component(
        name="kube-controller-manager",
        version="v1.35.4",  # kube-apiserver's release
        why="garbage collection, namespace deletion and aggregated roles in the e2e tests",
        targets=frozenset({"e2e"}),
        # 4 min 24 s after kube-apiserver at load 2-11 (14 min 24 s of CPU alone, hack/README.md)
        seconds=260,
        check=Probe(("--version",), "v1.35.4"),  # "Kubernetes v1.35.4"
        build=_go("hack/build-control-plane.sh", "kube-controller-manager"),
        after="kube-apiserver",  # the same release's packages, compiled once
    ),
    Component(
        name="etcd",
        version="v3.6.16",
        why="the API server's storage",
        targets=frozenset({"demo", "e2e", "bench"}),
        seconds=130,  # measured cold on 2 idle cores, beside kube-apiserver
        check=Probe(("--version",), "3.6.16"),  # "etcd Version: 3.6.16"
        build=_go("hack/build-control-plane.sh", "etcd"),
    ),
    Component(
        name="pve-api-schema",
        version="9.1",  # the apidoc of PVE 9.1, shipped in the PyPI package fakepve 0.5.0
        why="PVE's API schema, which pvesim validates every request against",
        targets=frozenset({"demo", "unit", "e2e", "bench", "bench-quick"}),
        seconds=10,
        check=Sha256("4e4fc9b5b0146627542a3988081b4ec3c785b3008b3a1499dd8c3c185be9a9db"),
        build=("bash", "hack/fetch-pve-schema.sh", "{out}"),
        # pvesim/schema.py reads the same variable and the same default file.
        env="PROXMIGRATE_PVE_SCHEMA",
        cache_file="pve-api-9.json.gz",
        on_path=False,
    ),
    Component(
        name="helm",
        version="v3.22.0",
        why="renders and lints the Helm chart in the tests",
        targets=frozenset({"unit", "e2e"}),  # tests/e2e/chart_env.py renders the chart
        seconds=150,
        check=Probe(("version", "--template", "{{.Version}}"), "v3.22.0"),
        build=_go("hack/build-tools.sh", "helm"),
    ),
    Component(
        name="promtool",
        # Prometheus 3.x publishes its Go module as v0.<major*100+minor>.<patch>.
        version="v0.316.0",
        why="checks and unit-tests the alert rules in the unit tests",
        targets=frozenset({"unit"}),
        seconds=150,
        check=Probe(("--version",), "3.16.0"),  # "promtool, version 3.16.0 (branch: ..."
        build=_go("hack/build-tools.sh", "promtool"),
    ),
    Component(
        name="prometheus",
        version="v0.316.0",  # the module version of Prometheus 3.16.0, as promtool
        why="the Prometheus server the e2e alert test scrapes the operator with",
        targets=frozenset({"e2e"}),
        seconds=480,
        check=Probe(("--version",), "3.16.0"),  # "prometheus, version 3.16.0 (branch: ..."
        build=_go("hack/build-prometheus.sh"),
    ),
    Component(
        name="sshd",
        version="system",  # Debian's openssh-server and openssh-client, as apt-get has them
        why="real OpenSSH for pvesim --sshd openssh (e2e real-sshd tests, bench.real_sshd)",
        targets=frozenset({"e2e", "bench"}),
        seconds=60,  # apt-get update and install
        check=AnyVersion(("-V",), r"\bOpenSSH_\d"),  # "OpenSSH_9.2p1 Debian-2+deb12u10, ..."
        build=("bash", "hack/install-openssh.sh", "{out}"),
    ),
)


class ProvisionError(RuntimeError):
    """One line saying what is wrong and what to do."""


DEV_STAMP = ".installed"  # the Makefile's $(STAMP)
RUNTIME_STAMP = ".runtime-installed"


@dataclass(frozen=True)
class PythonEnv:
    """The project's virtualenv (hack/venv.sh), installed beside the builds rather than before
    them: pip waits mostly on the network, the Go builds on the CPU (hack/README.md)."""

    path: Path  # e.g. .venv, relative to the repository
    dev: bool  # with the test and lint dependencies ('.[dev]'), else the runtime ones ('.')

    @property
    def seconds(self) -> int:
        return 120 if self.dev else 40  # measured on 2 cores, empty pip cache

    @property
    def label(self) -> str:
        return f"python-env {self.path}"

    @property
    def why(self) -> str:
        kind = "test and lint" if self.dev else "runtime"
        return f"the project's {kind} Python dependencies (pip output in {self.path}/pip.log)"

    def stamps(self) -> tuple[Path, ...]:
        """The files any of which says this kind is installed: a dev install has the runtime
        dependencies too."""
        venv = REPO_ROOT / self.path
        return (venv / DEV_STAMP,) if self.dev else (venv / RUNTIME_STAMP, venv / DEV_STAMP)

    def ready(self) -> bool:
        """Installed since pyproject.toml last changed."""
        changed = (REPO_ROOT / "pyproject.toml").stat().st_mtime
        return any(s.is_file() and s.stat().st_mtime > changed for s in self.stamps())

    def install(self, environ: Mapping[str, str] = os.environ) -> None:
        spec = ".[dev]" if self.dev else "."
        result = subprocess.run(
            ["bash", "hack/venv.sh", str(self.path), spec, self.why, duration(self.seconds)],
            cwd=REPO_ROOT,
            env={"PYTHON": sys.executable, **environ},
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode:
            raise ProvisionError(result.stderr.strip() or f"hack/venv.sh exit {result.returncode}")
        venv = REPO_ROOT / self.path
        for stamp in (DEV_STAMP, RUNTIME_STAMP) if self.dev else (RUNTIME_STAMP,):
            (venv / stamp).touch()


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("PROXMIGRATE_CACHE") or Path.home() / ".cache" / "proxmigrate")


def component(name: str) -> Component:
    for each in COMPONENTS:
        if each.name == name:
            return each
    raise ProvisionError(f"no component {name!r}; known: {', '.join(c.name for c in COMPONENTS)}")


def for_targets(targets: Iterable[str]) -> list[Component]:
    wanted = set(targets)
    unknown = wanted - set(TARGETS)
    if unknown:
        raise ProvisionError(f"unknown target {sorted(unknown)}; known: {', '.join(TARGETS)}")
    return [c for c in COMPONENTS if c.targets & wanted]


def cached_path(c: Component, environ: Mapping[str, str] = os.environ) -> Path:
    if c.cache_file:
        return cache_dir(environ) / c.cache_file
    return cache_dir(environ) / "bin" / f"{c.name}-{c.version}"


def log_path(c: Component, environ: Mapping[str, str] = os.environ) -> Path:
    return cache_dir(environ) / "logs" / f"{c.name}-{c.version}.log"


def existing(c: Component, environ: Mapping[str, str] = os.environ) -> Path | None:
    """Where `c` already is (variable, cache, PATH), or None if it must be built.

    A variable naming a missing file or another version is refused (ProvisionError): the
    user asked for that one, so quietly building another would hide their mistake.
    """
    given = environ.get(c.env_var)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise ProvisionError(f"{c.env_var}={given}: no such file (unset it to build {c.label})")
        why = c.check.mismatch(path)
        if why:
            raise ProvisionError(
                f"{c.env_var}={given} is not {c.label}: {why}; point it at {c.label} or unset it"
            )
        return path
    cached = cached_path(c, environ)
    if cached.is_file():
        return cached
    if c.on_path:
        found = shutil.which(c.name, path=environ.get("PATH"))
        if found and c.check.mismatch(Path(found)) is None:
            return Path(found)
    return None


def jobs(environ: Mapping[str, str] = os.environ) -> int:
    """How many builds run at once: PROXMIGRATE_JOBS, default 2 (see hack/README.md)."""
    value = environ.get("PROXMIGRATE_JOBS") or "2"
    if not value.isdigit() or int(value) < 1:
        raise ProvisionError(f"PROXMIGRATE_JOBS={value}: expected a whole number >= 1")
    return int(value)


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    if not minutes:
        return f"{seconds} s"
    return f"{minutes} min {seconds:02d} s" if seconds else f"{minutes} min"


def in_build_order(components: Iterable[Component]) -> list[tuple[Component, ...]]:
    """Chains of builds, one lane each, shortest first: a quick download that fails (no
    network) says so in seconds, not after a kube-apiserver build, and the total stays that
    of the longest chain. A component built `after` another missing one follows it in the
    same chain: it reuses the packages that one compiled instead of compiling them beside
    it a second time."""
    wanted = list(components)
    names = {c.name for c in wanted}
    heads = [c for c in wanted if c.after not in names]

    def chain(c: Component) -> tuple[Component, ...]:
        followers = [f for f in wanted if f.after == c.name]
        return (c, *(link for f in followers for link in chain(f)))

    return sorted((chain(c) for c in heads), key=lambda links: sum(c.seconds for c in links))


def estimate(components: Iterable[Component], at_once: int) -> float:
    """Expected wall time with `at_once` builds at a time, started as `ensure` does."""
    lanes = [0.0] * at_once
    for links in in_build_order(components):
        lanes[lanes.index(min(lanes))] += sum(c.seconds for c in links)
    return max(lanes)


class Progress:
    """One line per component; on a terminal each line gets its result in place (cut to
    the terminal's width, or moving the cursor up would land on a wrapped line's tail)."""

    RESULT_WIDTH = 24  # " FAILED after 10 min 00 s"

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty()
        self.width = shutil.get_terminal_size().columns - self.RESULT_WIDTH
        self.lines: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add(self, label: str, text: str) -> int:
        line = f"  {label}: {text}"
        if self.live and len(line) > self.width:
            line = line[: self.width - 3] + "..."
        with self.lock:
            self.lines.append((label, line))
            self.out.write(line + "\n")
            self.out.flush()
            return len(self.lines) - 1

    def finish(self, index: int, result: str) -> None:
        label, line = self.lines[index]
        with self.lock:
            if self.live:
                up = len(self.lines) - index
                self.out.write(f"\033[{up}A\r{line} {result}\033[K\033[{up}B\r")
            else:
                self.out.write(f"  {label}: {result}\n")
            self.out.flush()


def busy(load: float, cores: int | None = os.cpu_count()) -> str:
    """A note when other work shares the CPUs: the expected times are for idle ones."""
    cores = cores or 1
    if load <= cores:
        return ""
    return f" (this machine is busy, load average {load:.0f} on {cores} cores: expect longer)"


def shown(path: Path) -> str:
    """`path` with the home directory as ~, as a user would type it."""
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home) :] if text.startswith(home + "/") else text


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (two `make` runs never build the same thing twice)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build(c: Component, environ: Mapping[str, str] = os.environ) -> Path:
    """Build `c` into the cache, output to its log; ProvisionError (log shown) on failure."""
    dest = cached_path(c, environ)
    log = log_path(c, environ)
    with _locked(log.with_name(f".{log.stem}.lock")):
        if dest.is_file():  # another run built it while we waited for the lock
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        out = dest.with_name(dest.name + ".tmp")
        argv = [arg.format(out=out, version=c.version) for arg in c.build]
        with open(log, "w") as handle:
            code = subprocess.run(
                argv,
                cwd=REPO_ROOT,
                env={"PYTHON": sys.executable, **environ},
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            ).returncode
        problem = f"exit {code}" if code else c.check.mismatch(out)
        if problem:
            out.unlink(missing_ok=True)
            text = log.read_text(errors="replace")
            last = (text.strip().splitlines() or ["(empty log)"])[-1]
            raise ProvisionError(
                f"{text}\nprovision: building {c.label} failed ({problem}): {last}\n"
                f"provision: full log above and in {shown(log)}"
            )
        out.replace(dest)
    return dest


def ensure(
    components: Iterable[Component],
    out: TextIO = sys.stderr,
    environ: Mapping[str, str] = os.environ,
    python_env: PythonEnv | None = None,
    say: str = "",
) -> dict[str, Path]:
    """Every component's path, building the missing ones (concurrently, one line each) and
    installing `python_env` meanwhile if it is out of date; `say` comes first when anything
    is to be done."""
    found: dict[str, Path] = {}
    missing: list[Component] = []
    for c in components:
        path = existing(c, environ)
        if path is None:
            missing.append(c)
        else:
            found[c.name] = path
    env = python_env if python_env is not None and not python_env.ready() else None
    if not missing and env is None:
        return found
    chains = in_build_order(missing)
    at_once = jobs(environ)
    total = max(estimate(missing, at_once), env.seconds if env else 0)
    work = [f"building {len(missing)} component(s)"] if missing else []
    work += [f"installing {env.label}"] if env else []
    if say:
        out.write(say + "\n")
    out.write(
        f"provision: {' and '.join(work)} once, about "
        f"{duration(total)} on 2 idle cores{busy(*os.getloadavg()[:1])}"
        + (
            f"; build output in {shown(cache_dir(environ) / 'logs')}/<name>-<version>.log"
            if missing
            else ""
        )
        + "\n"
    )
    progress = Progress(out)

    def timed(line: int, work: Callable[[], Path | None]) -> Path | None:
        began = time.monotonic()
        try:
            result = work()
        except ProvisionError:
            progress.finish(line, f"FAILED after {duration(time.monotonic() - began)}")
            raise
        progress.finish(line, f"done in {duration(time.monotonic() - began)}")
        return result

    env_line = progress.add(f"{env.label} (about {duration(env.seconds)})", env.why) if env else -1
    lines = {
        c.name: progress.add(f"{c.label} (about {duration(c.seconds)})", c.why)
        for links in chains
        for c in links
    }

    def one_after_another(links: tuple[Component, ...]) -> dict[str, Path]:
        built = {}
        for c in links:
            built[c.name] = cast(Path, timed(lines[c.name], functools.partial(build, c, environ)))
        return built

    errors = []
    # The virtualenv gets a thread of its own: it must not hold a build lane.
    with (
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as side,
        concurrent.futures.ThreadPoolExecutor(max_workers=at_once) as pool,
    ):
        installing = side.submit(timed, env_line, lambda: env.install(environ)) if env else None
        for future in [pool.submit(one_after_another, links) for links in chains]:
            try:
                found.update(future.result())
            except ProvisionError as error:
                errors.append(str(error))
        if installing is not None:
            try:
                installing.result()
            except ProvisionError as error:
                errors.append(str(error))
    if errors:
        raise ProvisionError("\n".join(errors))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    targets = sub.add_parser("for", help="provision what these targets need")
    targets.add_argument("targets", nargs="*", help=f"any of {', '.join(TARGETS)}")
    targets.add_argument(
        "--venv", type=Path, help="also install this virtualenv (hack/venv.sh) if out of date"
    )
    targets.add_argument("--dev", action="store_true", help="with the test and lint dependencies")
    targets.add_argument("--say", default="", help="printed first if anything is to be set up")
    paths = sub.add_parser("path", help="print each component's path, provisioning it first")
    paths.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "for":
            env = PythonEnv(args.venv, args.dev) if args.venv else None
            ensure(for_targets(args.targets), python_env=env, say=args.say)
        else:
            wanted = [component(name) for name in args.names]
            found = ensure(wanted)
            print("\n".join(str(found[c.name]) for c in wanted))
    except ProvisionError as error:
        print(error if "\n" in str(error) else f"provision: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
