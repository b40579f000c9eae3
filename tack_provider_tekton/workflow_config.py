"""Validating a workflow's ``tack: {tekton: {...}}`` mapping, free of I/O (docs/tekton-api.md §3).

Errors name the offending key the way a user wrote it, e.g.
``tack.tekton.params.mode: must be a string, a list of strings or a mapping of strings``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tack_provider_kit.provider import InvalidArgument


WHERE = "tack.tekton"
KEYS = (
    "pipeline",
    "params",
    "workspaces",
    "serviceAccountName",
    "timeouts",
    "labels",
    "annotations",
    "cancel",
)
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,252}")
WORKSPACE_SOURCES = (
    "emptyDir",
    "persistentVolumeClaim",
    "volumeClaimTemplate",
    "configMap",
    "secret",
    "projected",
    "csi",
)
TIMEOUT_KEYS = ("pipeline", "tasks", "finally")
GO_DURATION = re.compile(r"0|(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")
LABEL_NAME = re.compile(
    r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
RESERVED_PREFIXES = ("tack.tangled.org/", "tekton.dev/", "app.kubernetes.io/managed-by")
CANCEL_MODES = ("Cancelled", "CancelledRunFinally", "StoppedRunFinally")
MAX_TEXT = 4096
MAX_ITEMS = 200

ParamValue = str | list[str] | dict[str, str]


@dataclass(frozen=True)
class TektonConfig:
    """A validated ``tack.tekton`` mapping."""

    pipeline: str
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    workspaces: tuple[Mapping[str, Any], ...] = ()
    service_account: str | None = None
    timeouts: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    cancel: str = "Cancelled"
    """How Cancel stops the run: the PipelineRun ``spec.status`` to set."""


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidArgument(f"{where}: must be a mapping")
    if len(value) > MAX_ITEMS:
        raise InvalidArgument(f"{where}: at most {MAX_ITEMS} entries")
    return value


def _name(value: object, where: str, what: str) -> str:
    if not isinstance(value, str) or DNS_SUBDOMAIN.fullmatch(value) is None:
        raise InvalidArgument(f"{where}: must be a {what} name (lower-case letters, digits, '-' and '.')")
    return value


def _scalar(value: object, where: str) -> str:
    """A YAML scalar as Tekton wants it: a string (numbers and booleans written as YAML would)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}: must be a string, a list of strings or a mapping of strings")
    if len(value) > MAX_TEXT * 16:
        raise InvalidArgument(f"{where}: must be at most {MAX_TEXT * 16} characters")
    return value


def _params(value: object) -> dict[str, ParamValue]:
    where = f"{WHERE}.params"
    out: dict[str, ParamValue] = {}
    for name, item in _mapping(value, where).items():
        if PARAM_NAME.fullmatch(name) is None:
            raise InvalidArgument(
                f"{where}.{name}: not a Tekton param name (a letter or '_', then letters, digits, '_', '.', '-')"
            )
        at = f"{where}.{name}"
        if isinstance(item, list):
            out[name] = [_scalar(v, f"{at}[{i}]") for i, v in enumerate(item)]
        elif isinstance(item, Mapping):
            out[name] = {str(k): _scalar(v, f"{at}.{k}") for k, v in _mapping(item, at).items()}
        else:
            out[name] = _scalar(item, at)
    return out


def _workspaces(value: object) -> tuple[Mapping[str, Any], ...]:
    where = f"{WHERE}.workspaces"
    if not isinstance(value, list):
        raise InvalidArgument(f"{where}: must be a list of workspace bindings")
    seen: set[str] = set()
    out = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        binding = _mapping(item, at)
        for key in binding:
            if key not in ("name", "subPath", *WORKSPACE_SOURCES):
                raise InvalidArgument(
                    f"{at}.{key}: unknown key (known: name, subPath, {', '.join(WORKSPACE_SOURCES)})"
                )
        name = _name(binding.get("name"), f"{at}.name", "workspace")
        if name in seen:
            raise InvalidArgument(f"{at}.name: workspace {name!r} is bound twice")
        seen.add(name)
        sources = [key for key in WORKSPACE_SOURCES if key in binding]
        if len(sources) != 1:
            raise InvalidArgument(f"{at}: needs exactly one of {', '.join(WORKSPACE_SOURCES)}")
        _mapping(binding[sources[0]], f"{at}.{sources[0]}")
        if "subPath" in binding and not isinstance(binding["subPath"], str):
            raise InvalidArgument(f"{at}.subPath: must be a string")
        out.append(dict(binding))
    return tuple(out)


def _timeouts(value: object) -> dict[str, str]:
    where = f"{WHERE}.timeouts"
    out = {}
    for key, item in _mapping(value, where).items():
        if key not in TIMEOUT_KEYS:
            raise InvalidArgument(f"{where}.{key}: unknown key (known: {', '.join(TIMEOUT_KEYS)})")
        if not isinstance(item, str) or GO_DURATION.fullmatch(item) is None:
            raise InvalidArgument(f"{where}.{key}: must be a duration such as 1h30m, 45m or 90s")
        out[key] = item
    return out


def _metadata(value: object, key: str) -> dict[str, str]:
    where = f"{WHERE}.{key}"
    out = {}
    for name, item in _mapping(value, where).items():
        if LABEL_NAME.fullmatch(name) is None:
            raise InvalidArgument(f"{where}.{name}: not a valid Kubernetes {key[:-1]} key")
        if name.startswith(RESERVED_PREFIXES):
            raise InvalidArgument(
                f"{where}.{name}: {', '.join(RESERVED_PREFIXES)} keys are set by tack or Tekton"
            )
        if not isinstance(item, str):
            raise InvalidArgument(f"{where}.{name}: must be a string")
        if key == "labels" and LABEL_VALUE.fullmatch(item) is None:
            raise InvalidArgument(
                f"{where}.{name}: a label value is at most 63 letters, digits, '-', '_', '.'"
            )
        if len(item) > MAX_TEXT:
            raise InvalidArgument(f"{where}.{name}: must be at most {MAX_TEXT} characters")
        out[name] = item
    return out


def parse(config: object) -> TektonConfig:
    """Validate a ``tack.tekton`` mapping (already decoded from JSON)."""
    raw = _mapping({} if config is None else config, WHERE)
    for key in raw:
        if key not in KEYS:
            raise InvalidArgument(f"{WHERE}.{key}: unknown key (known: {', '.join(KEYS)})")
    if "pipeline" not in raw:
        raise InvalidArgument(f"{WHERE}.pipeline: required (the name of a Tekton Pipeline in the namespace)")
    cancel = raw.get("cancel", "Cancelled")
    if cancel not in CANCEL_MODES:
        raise InvalidArgument(f"{WHERE}.cancel: must be one of {', '.join(CANCEL_MODES)}")
    account = raw.get("serviceAccountName")
    return TektonConfig(
        pipeline=_name(raw["pipeline"], f"{WHERE}.pipeline", "Pipeline"),
        params=_params(raw.get("params", {})),
        workspaces=_workspaces(raw.get("workspaces", [])),
        service_account=None
        if account is None
        else _name(account, f"{WHERE}.serviceAccountName", "ServiceAccount"),
        timeouts=_timeouts(raw.get("timeouts", {})),
        labels=_metadata(raw.get("labels", {}), "labels"),
        annotations=_metadata(raw.get("annotations", {}), "annotations"),
        cancel=str(cancel),
    )


def parse_json(config_json: str) -> TektonConfig:
    """Validate the Workflow's ``config_json`` (the JSON of the ``tack.tekton`` mapping)."""
    try:
        decoded = json.loads(config_json or "{}")
    except ValueError as exc:
        raise InvalidArgument(f"config_json: not JSON ({exc})") from None
    return parse(decoded)
