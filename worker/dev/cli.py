"""``smsc-mailer-dev``: the tools around the product — the provider simulator, the demo, the benchmark and the
chaos suite. They live apart from the operator's ``smsc-mailer`` (and ship only with the ``dev`` extra), so a
production install holds none of them.

A value the tools cannot use (``demo --recipients 0``, ``bench --batch-sizes abc``) is one line on stderr,
``smsc-mailer-dev: …``, and exit code 2, before anything starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

__all__ = ["cli", "main"]

PROG = "smsc-mailer-dev"
WORKLOADS = ("intake", "personal", "cold", "send", "lanes", "late", "baselines", "delivery")
# A send request holds at most this many recipients here (the operator's --batch-size has the same range).
MAX_BATCH_SIZE = 5000


class _OneLineErrors(click.Group):
    """A group whose usage errors are one line (``smsc-mailer-dev: demo: Invalid value for …``) and exit 2,
    not click's usage block."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        standalone = standalone_mode
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            if not standalone:
                raise
            where = f"{exc.ctx.info_name}: " if isinstance(exc, click.UsageError) and exc.ctx \
                and exc.ctx.info_name != PROG else ""
            click.echo(f"{PROG}: {where}{exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            if not standalone:
                raise
            click.echo("Aborted!", err=True)
            sys.exit(1)
        if standalone:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


class _Sizes(click.ParamType[tuple[int, ...]]):
    """Comma-separated batch sizes, each 1..MAX_BATCH_SIZE, none twice: ``500,100``."""

    name = "SIZES"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        sizes: list[int] = []
        for part in parts:
            if not part.isdigit():
                self.fail(f"{part!r} is not a batch size: give whole numbers separated by commas, such as 500,100",
                          param, ctx)
            size = int(part)
            if not 1 <= size <= MAX_BATCH_SIZE:
                self.fail(f"{size} is not a batch size: each is 1..{MAX_BATCH_SIZE}", param, ctx)
            if size in sizes:
                self.fail(f"{size} is given twice", param, ctx)
            sizes.append(size)
        return tuple(sizes)


class _Workloads(click.ParamType[str]):
    """Comma-separated workloads of the benchmark, each one of :data:`WORKLOADS`."""

    name = "WORKLOADS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        names = [p.strip() for p in str(value).split(",")]
        unknown = [n for n in names if n not in WORKLOADS]
        if unknown:
            self.fail(f"unknown workload {unknown[0]!r}: choose from {', '.join(WORKLOADS)}", param, ctx)
        return ",".join(names)


def _writable_file(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """The results file must be writable now, not after minutes of benchmark."""
    path = Path(value)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the folders that do not exist yet are made at the end
    if path.is_dir():
        raise click.BadParameter(f"{value} is a directory", ctx, param)
    if not folder.is_dir() or not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise click.BadParameter(f"{value} cannot be written", ctx, param)
    return value


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Tools for smsc-mailer's developers: simulator, demo, bench, chaos."""


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--port", type=int, default=8080, show_default=True)
@click.pass_context
def simulator(ctx: click.Context, port: int) -> None:
    """Serve the provider simulator (send.php, status.php, balance.php) on 127.0.0.1:PORT."""
    from worker.sim.server import run

    raise SystemExit(run(["--port", str(port), *ctx.args]))


@cli.command()
@click.option("--recipients", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the stack and the dashboard running until Ctrl-C (make up).")
def demo(recipients: int, keep: bool) -> None:
    """Bring up Redis, the simulator, a worker, beat and the dashboard; send a demo campaign; stop everything."""
    from worker.dev.demo import run_demo

    raise SystemExit(run_demo(recipients=recipients, keep=keep))


@cli.command()
@click.option("--quick", is_flag=True, help="The small size (200,000 lines; a few minutes).")
@click.option("--recipients", type=click.IntRange(1_000, 10_000_000), help="Lines of the phones file.")
@click.option("--out", type=click.Path(dir_okay=False), default="bench/results.json", show_default=True,
              callback=_writable_file)
@click.option("--pool", type=click.Choice(["prefork", "threads"]), default="prefork", show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 32), default=10, show_default=True,
              help="Of each of the 2 workers (20 processes for 14 slots: a freed slot finds a batch ready).")
@click.option("--workloads", type=_Workloads(), default=",".join(WORKLOADS), show_default=True)
@click.option("--batch-sizes", type=_Sizes(), default="500,100", show_default=True,
              help="Send workloads, comma-separated.")
@click.option("--profile", type=click.Path(file_okay=False), help="py-spy the workers while sending; files here.")
def bench(quick: bool, recipients: int | None, out: str, pool: str, concurrency: int, workloads: str,
          batch_sizes: tuple[int, ...], profile: str | None) -> None:
    """Intake and sending of a campaign against the provider's limit, and the baselines: one table + JSON."""
    from worker.dev.bench.run import run_bench

    raise SystemExit(run_bench(quick=quick, recipients=recipients, out=Path(out), pool=pool,
                               concurrency=concurrency, workloads=workloads, batch_sizes=batch_sizes,
                               profile=Path(profile) if profile else None, echo=click.echo))


def _scenario(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from worker.dev.chaos import SCENARIOS

    if value is not None and value not in SCENARIOS:
        raise click.BadParameter(f"unknown scenario {value!r}: one of {', '.join(SCENARIOS)}", ctx, param)
    return value


@cli.command()
@click.option("--quick", is_flag=True, help="Smaller campaigns (what the test suite runs).")
@click.option("--only", callback=_scenario, help="Run one scenario by name (a wrong name lists them).")
@click.option("--json", "as_json", is_flag=True, help="Last line: a JSON list of the results.")
def chaos(quick: bool, only: str | None, as_json: bool) -> None:
    """Kill workers, restart and freeze Redis, slow and strict provider, fast clocks: prints recipients, lost,
    duplicated, breaches (all 0) and the time to completed, within its bound."""
    from worker.dev.chaos import main as run_chaos

    raise SystemExit(run_chaos(quick=quick, only=only, as_json=as_json))


def main() -> None:
    cli(prog_name=PROG)


if __name__ == "__main__":
    main()
