"""Processing pipelines mapping Sigma's taxonomy to the field names soc's events carry.

- ``ecs``: events with ECS names (what soc's sensors, log readers and Winlogbeat produce). Windows rules go through
  pySigma-backend-elasticsearch's ``ecs_windows``; network rules (dns, proxy, webserver, firewall,
  network_connection off Windows, zeek) through ``ecs_zeek_beats``' field mapping (reused, not re-typed) with
  logsource conditions on ``event.dataset`` naming soc's sensor datasets beside Zeek's.
- ``native``: events carrying the rule's own Sigma/Sysmon names (flattened EVTX): pySigma's ``sysmon`` and
  ``windows-logsources`` pipelines, as SigmaHQ's CI uses them.
Both end with placeholder expansion (``|expand``) from configured values.
"""

from __future__ import annotations

from typing import Any

from sigma.pipelines.elasticsearch import ecs_windows, ecs_zeek_beats
from sigma.pipelines.sysmon import sysmon_pipeline
from sigma.pipelines.windows import windows_logsource_pipeline
from sigma.processing.conditions import LogsourceCondition, RuleProcessingCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import (
    AddConditionTransformation,
    FieldFunctionTransformation,
    FieldMappingTransformation,
    ValueListPlaceholderTransformation,
)

# Sigma network category / Zeek service -> event.dataset values of soc's producers that carry such events.
CATEGORY_DATASETS: dict[str, list[str]] = {
    "dns": ["soc.dns", "zeek.dns"],
    "proxy": ["soc.http", "zeek.http"],
    "webserver": ["soc.http", "zeek.http"],
    "firewall": ["soc.flow", "zeek.conn"],
    "network_connection": ["soc.flow", "zeek.conn"],
}
ZEEK_SOC_DATASET = {"conn": "soc.flow", "dns": "soc.dns", "http": "soc.http", "ssl": "soc.tls", "ssh": "soc.ssh"}

# Where soc's sensor names a field differently from ecs_zeek_beats' choice (additions, not re-typing).
SOC_FIELD_OVERRIDES: dict[str, Any] = {
    "answer": ["dns.answers", "dns.answers.data", "dns.answers.name"],
    "answers": ["dns.answers", "dns.answers.data", "dns.answers.name"],
    "qtype_name": "dns.question.type",
    "record_type": "dns.question.type",
    "cs-host": ["url.domain", "destination.domain"],
    "host": ["url.domain", "destination.domain"],
    "c-uri-path": "url.path",
    "uri": "url.original",
    "server_name": "tls.client.server_name",
    "user_agent": "user_agent.original",
    "id.orig_h": "source.ip",
    "id.orig_p": "source.port",
    "id.resp_h": "destination.ip",
    "id.resp_p": "destination.port",
    "ja3": "tls.client.ja3",
}


class NotWindows(RuleProcessingCondition):
    """Matches rules whose logsource product is not Windows (network_connection is also a Sysmon category)."""

    def match(self, rule: Any) -> bool:
        return (getattr(getattr(rule, "logsource", None), "product", None) or "").lower() != "windows"


def _zeek_field_mapping() -> dict[str, Any]:
    for item in ecs_zeek_beats().items:
        if item.identifier == "zeek_ecs_field_mapping":
            return dict(item.transformation.mapping)
    raise RuntimeError("ecs_zeek_beats has no field mapping item: pySigma-backend-elasticsearch changed")


def soc_network_pipeline() -> ProcessingPipeline:
    """Network categories and Zeek services onto soc's sensor events (ECS)."""
    items: list[ProcessingItem] = []
    for category, datasets in CATEGORY_DATASETS.items():
        items.append(
            ProcessingItem(
                identifier=f"soc_network_{category}",
                transformation=AddConditionTransformation({"event.dataset": datasets}),
                rule_conditions=[LogsourceCondition(category=category), NotWindows()],
                rule_condition_linking=all,
            )
        )
    for service in ("conn", "dns", "http", "ssl", "ssh", "smb_files", "smb_mapping", "dce_rpc", "kerberos",
                    "ntlm", "rdp", "x509", "files", "notice", "smtp", "ftp", "weird", "intel", "software"):
        datasets = [f"zeek.{service}"] + ([ZEEK_SOC_DATASET[service]] if service in ZEEK_SOC_DATASET else [])
        items.append(
            ProcessingItem(
                identifier=f"soc_zeek_{service}",
                transformation=AddConditionTransformation({"event.dataset": datasets}),
                rule_conditions=[LogsourceCondition(product="zeek", service=service)],
            )
        )
    mapping = _zeek_field_mapping() | SOC_FIELD_OVERRIDES
    items.append(
        ProcessingItem(
            identifier="soc_network_field_mapping",
            transformation=FieldMappingTransformation(mapping),
            rule_conditions=[NotWindows()],
        )
    )
    return ProcessingPipeline(name="soc network sensor (ECS) mapping", priority=20, items=items)


def _drop_caseless(field: str | None) -> str | None:
    return field.removesuffix(".caseless") if field else field


def caseless_pipeline() -> ProcessingPipeline:
    """``ecs_windows`` targets ``<field>.caseless`` (an Elasticsearch normalizer sub-field); soc events carry the
    field itself and the matcher is case-insensitive anyway."""
    return ProcessingPipeline(
        name="soc drop .caseless",
        priority=80,
        items=[
            ProcessingItem(
                identifier="soc_drop_caseless",
                transformation=FieldFunctionTransformation(mapping={}, transform_func=_drop_caseless),
            )
        ],
    )


def placeholder_pipeline(placeholders: dict[str, list[str]] | None) -> ProcessingPipeline:
    """Expand ``|expand`` placeholders from configured values; unknown placeholders make the rule unsupported."""
    return ProcessingPipeline(
        name="soc placeholders",
        priority=90,
        items=[ProcessingItem(identifier="soc_placeholders", transformation=ValueListPlaceholderTransformation())],
        vars=dict(placeholders or {}),
    )


def build_pipeline(schema: str, placeholders: dict[str, list[str]] | None = None) -> ProcessingPipeline:
    """The processing pipeline for ``schema`` ('ecs' or 'native')."""
    if schema == "ecs":
        base = ecs_windows() + soc_network_pipeline() + caseless_pipeline()
    elif schema == "native":
        base = sysmon_pipeline() + windows_logsource_pipeline()
    else:
        raise ValueError(f"unknown schema {schema!r} (expected 'ecs' or 'native')")
    return base + placeholder_pipeline(placeholders)
