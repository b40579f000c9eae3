"""The stub provider's workflow script: defaults, every key, errors naming the key (tack_provider_stub.script)."""

from __future__ import annotations

import json

import pytest

from tack_provider_kit.provider import InvalidArgument
from tack_provider_stub import script as scripts


# stub script parsing


def test_stub_script_defaults() -> None:
    """An empty or absent config is the default script: two quick steps, then success."""
    configs: tuple[dict[str, object] | None, ...] = ({}, None)
    for config in configs:
        script = scripts.parse(config)
        assert script == scripts.Script()
        assert [s.name for s in script.steps] == ["prepare", "build"]
        assert all(s.duration < 1 for s in script.steps)
        assert (script.queue_seconds, script.outcome, script.exit_code, script.error) == (
            0.1,
            "success",
            1,
            "",
        )


def test_stub_script_parses_every_key_and_round_trips_json() -> None:
    """A full config parses to the script it describes and survives to_json/from_json through JSON."""
    script = scripts.parse(
        {
            "queue_seconds": 0,
            "outcome": "failed",
            "exit_code": 7,
            "error": "boom",
            "steps": [
                {
                    "name": "a",
                    "command": "run a",
                    "output": "one\ntwo\n",
                    "output_count": 2,
                    "duration": 1.5,
                    "stream": "stderr",
                },
                {"name": "b"},
            ],
        }
    )
    assert script.steps[0] == scripts.Step("a", "run a", ("one", "two"), 2, 1.5, "stderr")
    assert script.steps[1] == scripts.Step("b")
    assert [script.steps[0].line(i) for i in range(script.steps[0].line_count)] == [
        "one",
        "two",
        "a: line 1",
        "a: line 2",
    ]
    assert (script.queue_seconds, script.outcome, script.exit_code, script.failure_message()) == (
        0.0,
        "failed",
        7,
        "boom",
    )
    assert scripts.from_json(json.loads(json.dumps(script.to_json()))) == script


def test_stub_failure_message_defaults_to_last_step() -> None:
    """Without error, a failed script reports the last step's name and the exit code."""
    script = scripts.parse({"outcome": "failed", "exit_code": 2, "steps": [{"name": "x"}, {"name": "y"}]})
    assert script.failure_message() == "step 'y' exited with status 2"
    assert scripts.parse({"outcome": "failed", "steps": []}).failure_message() == (
        "step 'workflow' exited with status 1"
    )


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ([], "tack.stub:"),
        ("x", "tack.stub:"),
        ({"bogus": 1}, "tack.stub.bogus:"),
        ({"steps": 3}, "tack.stub.steps:"),
        ({"steps": [{}] * (scripts.MAX_STEPS + 1)}, "tack.stub.steps:"),
        ({"steps": ["x"]}, "tack.stub.steps[0]:"),
        ({"steps": [{"command": "c"}]}, "tack.stub.steps[0].name:"),
        ({"steps": [{"name": 5}]}, "tack.stub.steps[0].name:"),
        ({"steps": [{"name": ""}]}, "tack.stub.steps[0].name:"),
        ({"steps": [{"name": "a", "extra": 1}]}, "tack.stub.steps[0].extra:"),
        ({"steps": [{"name": "a"}, {"name": "b", "command": 1}]}, "tack.stub.steps[1].command:"),
        ({"steps": [{"name": "a", "output": [1]}]}, "tack.stub.steps[0].output:"),
        ({"steps": [{"name": "a", "output": {"k": "v"}}]}, "tack.stub.steps[0].output:"),
        ({"steps": [{"name": "a", "output_count": -1}]}, "tack.stub.steps[0].output_count:"),
        ({"steps": [{"name": "a", "output_count": 1.5}]}, "tack.stub.steps[0].output_count:"),
        ({"steps": [{"name": "a", "output_count": True}]}, "tack.stub.steps[0].output_count:"),
        ({"steps": [{"name": "a", "duration": "x"}]}, "tack.stub.steps[0].duration:"),
        ({"steps": [{"name": "a", "duration": -1}]}, "tack.stub.steps[0].duration:"),
        ({"steps": [{"name": "a", "duration": scripts.MAX_SECONDS + 1}]}, "tack.stub.steps[0].duration:"),
        ({"steps": [{"name": "a", "stream": "stdlog"}]}, "tack.stub.steps[0].stream:"),
        ({"steps": [{"name": "a", "stream": 1}]}, "tack.stub.steps[0].stream:"),
        ({"queue_seconds": "soon"}, "tack.stub.queue_seconds:"),
        ({"queue_seconds": False}, "tack.stub.queue_seconds:"),
        ({"outcome": "explode"}, "tack.stub.outcome:"),
        ({"outcome": 1}, "tack.stub.outcome:"),
        ({"exit_code": "1"}, "tack.stub.exit_code:"),
        ({"exit_code": 2**31}, "tack.stub.exit_code:"),
        ({"error": ["e"]}, "tack.stub.error:"),
    ],
)
def test_stub_script_errors_name_their_key(config: object, where: str) -> None:
    """Every invalid stub config raises InvalidArgument whose message starts with the offending key."""
    with pytest.raises(InvalidArgument) as info:
        scripts.parse(config)
    assert str(info.value).startswith(where), str(info.value)
