"""``smsc-mailer-dev``: the tools around the product — the provider simulator, the demo, the benchmark and the
chaos suite. They live apart from the operator's ``smsc-mailer`` (and ship only with the ``dev`` extra), so a
production install holds none of them.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--recipients", type=int, default=10_000, show_default=True)
def demo(recipients: int) -> None:
    """Bring up Redis, the simulator, a worker and beat; send a demo campaign; stop everything."""
    from worker.dev.demo import run_demo

    raise SystemExit(run_demo(recipients=recipients))


@cli.command()
@click.option("--quick", is_flag=True, help="The small size (200,000 lines; under two minutes).")
@click.option("--recipients", type=click.IntRange(1_000, 10_000_000), help="Lines of the phones file.")
@click.option("--out", type=click.Path(dir_okay=False), default="bench/results.json", show_default=True)
@click.option("--pool", type=click.Choice(["prefork", "threads"]), default="prefork", show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 32), default=10, show_default=True,
              help="Of each of the 2 workers (20 processes for 14 slots: a freed slot finds a batch ready).")
@click.option("--workloads", default="intake,send,baselines", show_default=True)
@click.option("--batch-sizes", default="500,100", show_default=True, help="Send workloads, comma-separated.")
@click.option("--profile", type=click.Path(file_okay=False), help="py-spy the workers while sending; files here.")
def bench(quick: bool, recipients: int | None, out: str, pool: str, concurrency: int, workloads: str,
          batch_sizes: str, profile: str | None) -> None:
    """Intake and sending of a campaign against the provider's limit, and the baselines: one table + JSON."""
    from worker.dev.bench.run import run_bench

    raise SystemExit(run_bench(quick=quick, recipients=recipients, out=Path(out), pool=pool,
                               concurrency=concurrency, workloads=workloads,
                               batch_sizes=tuple(int(x) for x in batch_sizes.split(",")),
                               profile=Path(profile) if profile else None, echo=click.echo))


@cli.command()
@click.option("--quick", is_flag=True, help="Smaller campaigns (what the test suite runs).")
@click.option("--only", help="Run one scenario: worker-kills, redis-restart, provider-faults, two-beats.")
@click.option("--json", "as_json", is_flag=True, help="Last line: a JSON list of the results.")
def chaos(quick: bool, only: str | None, as_json: bool) -> None:
    """Kill workers, restart Redis, inject provider faults: prints lost/duplicated/breaches (all 0)."""
    from worker.dev.chaos import main as run_chaos

    raise SystemExit(run_chaos(quick=quick, only=only, as_json=as_json))


def main() -> None:
    cli(prog_name="smsc-mailer-dev")


if __name__ == "__main__":
    main()
