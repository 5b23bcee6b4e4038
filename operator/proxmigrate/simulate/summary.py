"""What `proxmigrate simulate` shows: a progress line while it runs, then the summary tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from proxmigrate.simulate.drain import Progress
    from proxmigrate.simulate.predict import Prediction

GIB = 1 << 30
BAR_WIDTH = 30


class ProgressBar:
    """One line on stderr, rewritten in place (virtual time, not wall time)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._shown_at = -1.0
        self._label = ""

    def __call__(self, label: str, progress: Progress) -> None:
        finished = progress.done + progress.failed
        if label != self._label:
            self._label, self._shown_at = label, -1.0
        if progress.elapsed - self._shown_at < 5.0 and finished < progress.total:
            return
        self._shown_at = progress.elapsed
        filled = BAR_WIDTH * finished // max(1, progress.total)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self._stream.write(
            f"\r{label} [{bar}] {finished}/{progress.total} done, "
            f"{progress.running} running, t={progress.elapsed:.0f} s   "
        )
        self._stream.flush()

    def close(self) -> None:
        self._stream.write("\n")
        self._stream.flush()


def render(
    config: dict[str, Any], drained: list[str], predictions: list[Prediction], max_startups: str
) -> str:
    """The summary: the comparison table, then the first setting's per-target load."""
    first = predictions[0]
    links = sorted({float(node.get("nic_gbit", 10)) for node in config["nodes"]})
    lines = [
        f"Drain of {', '.join(drained)}: {first.moves} moves, "
        f"{first.bound.bytes / GIB:.1f} GiB of memory in use; "
        f"targets' sshd MaxStartups {max_startups}; links {'/'.join(f'{x:g}' for x in links)} "
        "Gbit/s.",
        f"Lower bound {first.bound.seconds:.0f} s ({first.bound.bottleneck}); "
        f"{len(first.paced)} seeded run(s) per setting.",
    ]
    if first.unplaceable:
        lines.append(f"Cannot place {len(first.unplaceable)} VM(s):")
        lines += [f"  {vm.vmid} ({vm.name}): {vm.reason}" for vm in first.unplaceable]
    lines += [
        "",
        "| maxParallel | predicted time s, median [min-max] | vs bound | SSH drops/run paced "
        "| runs with a drop | SSH drops/run unpaced | runs with a drop | VMs left behind |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for prediction in predictions:
        spans = [run.makespan for run in prediction.paced]
        lines.append(
            f"| {prediction.max_parallel} "
            f"| {prediction.median_makespan:.0f} [{min(spans):.0f}-{max(spans):.0f}] "
            f"| {prediction.median_makespan / max(prediction.bound.seconds, 1e-9):.2f}x "
            f"| {_drops(prediction.paced)} | {_drops(prediction.unpaced)} "
            f"| {max(run.left_behind for run in prediction.paced)} |"
        )
    lines += [
        "",
        f"Per-target load (maxParallel {first.max_parallel}, first run):",
        "| target | VMs received | GiB | peak inbound migrations | peak pre-auth SSH | SSH drops |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {t.node} | {t.vms} | {t.bytes / GIB:.1f} | {t.peak_inbound} | {t.peak_preauth} "
        f"| {t.ssh_drops} |"
        for t in first.targets
    ]
    return "\n".join(lines)


def _drops(runs: tuple[Any, ...]) -> str:
    if not runs:
        return "- | -"
    mean = sum(run.ssh_drops for run in runs) / len(runs)
    hit = sum(1 for run in runs if run.ssh_drops)
    return f"{mean:.1f} | {hit}/{len(runs)}"
