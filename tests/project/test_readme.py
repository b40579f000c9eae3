"""The README tells the truth: every command, variable, module and metric it names exists."""

from __future__ import annotations

import re

from tests.support.codefacts import (
    ROOT,
    defines_metric,
    make_targets,
    module_runs,
    reads_variable,
    source_text,
)


README = (ROOT / "README.md").read_text()


def test_readme_shows_the_two_commands() -> None:
    """The README opens with `make run` and `make test`."""
    assert "make run" in README
    assert "make test" in README


def test_every_make_target_in_the_readme_exists() -> None:
    """Each `make X` the README mentions is a Makefile target."""
    mentioned = set(re.findall(r"`make ([a-z][a-z-]*)`", README)) | set(
        re.findall(r"^make ([a-z][a-z-]*)", README, re.MULTILINE)
    )
    assert mentioned >= {"run", "test", "trigger"}
    assert sorted(mentioned - make_targets()) == []


def test_every_variable_in_the_readme_is_read_by_the_code() -> None:
    """Each TACK_* variable the README documents is read by some service."""
    names = set(re.findall(r"\bTACK_[A-Z_]+[A-Z]\b", README))
    code = source_text()
    assert sorted(n for n in names if not reads_variable(n, code)) == []


def test_every_variable_the_code_reads_is_in_the_readme() -> None:
    """No TACK_* variable read by the code is left undocumented."""
    code = source_text()
    prefixes = set(re.findall(r'prefix="(TACK_[A-Z_]+)"', code))
    read = set(re.findall(r'"(TACK_[A-Z_]+[A-Z])"', code)) - prefixes
    assert sorted(read - set(re.findall(r"\bTACK_[A-Z_]+[A-Z]\b", README))) == []


def test_every_python_module_in_the_readme_runs() -> None:
    """Each `python -m X` in the README can start."""
    modules = set(re.findall(r"python -m ([a-z_.]+)", README))
    assert "tack_control" in modules
    assert sorted(m for m in modules if not module_runs(m)) == []


def test_every_metric_in_the_readme_is_defined() -> None:
    """Each tack_* metric in the metrics table is defined in the code."""
    table = README[README.index("## Metrics") : README.index("## Troubleshooting")]
    names = set(re.findall(r"`(tack_[a-z_]+)`", table))
    code = source_text()
    assert len(names) > 10
    assert sorted(n for n in names if not defines_metric(n, code)) == []


def _registered_metrics() -> dict[str, str]:
    """Exported name → Python name of every metric the shipped code registers."""
    found = {}
    for match in re.finditer(
        r"^([A-Z_]+)(?::[^=]*)? = (Counter|Gauge|Histogram|Info)\(\s*\"(tack_[a-z_]+)\"", source_text(), re.M
    ):
        suffix = "_info" if match.group(2) == "Info" else ""
        found[match.group(3) + suffix] = match.group(1)
    return found


def test_every_metric_the_code_registers_is_in_the_readme() -> None:
    """No registered metric is left out of the README's metrics table."""
    table = README[README.index("## Metrics") : README.index("## Troubleshooting")]
    registered = _registered_metrics()
    assert len(registered) > 10
    assert sorted(n for n in registered if f"`{n}`" not in table) == []


def test_every_registered_metric_is_updated_somewhere() -> None:
    """A metric that is exported is also set or counted by some code outside its definition."""
    code = source_text()
    unused = [
        name
        for name, constant in _registered_metrics().items()
        if len(re.findall(rf"\b{constant}\b", code)) < 2
    ]
    assert unused == []
