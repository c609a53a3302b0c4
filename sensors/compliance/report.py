"""Scan reports (Markdown, HTML) and the roll-up of stored results by organization or host."""

from __future__ import annotations

import html
import re
from collections import defaultdict
from typing import Any

from sensors.compliance.scanner import ERROR, FAILED, NOT_APPLICABLE, PASSED, CheckResult, ScanResult


def _score(passed: int, failed: int) -> float | None:
    return round(100.0 * passed / (passed + failed), 1) if passed + failed else None


def summary(scan: ScanResult, host: str, org: str | None) -> dict[str, Any]:
    c = scan.counts()
    return {"policy": scan.policy.id, "host": host, "organization": org, "root": scan.root,
            "passed": c[PASSED], "failed": c[FAILED], "not_applicable": c[NOT_APPLICABLE], "error": c[ERROR],
            "score": scan.score(), "requirements_met": scan.requirements_met}


def _rows(scan: ScanResult) -> list[tuple[str, ...]]:
    return [(str(r.check.id), r.check.severity, r.status, r.check.title, r.reason,
             "; ".join(f"{k}: {', '.join(v)}" for k, v in r.check.compliance.items()))
            for r in scan.results]


def evidence_lines(result: CheckResult) -> list[str]:
    """The result's evidence items, then `… and N more` when the list was capped."""
    more = [f"… and {result.evidence_more} more"] if result.evidence_more else []
    return [*result.evidence, *more]


def _code(text: str) -> str:
    """`text` as a Markdown code span whatever backticks it holds."""
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def to_markdown(scan: ScanResult, host: str, org: str | None) -> str:
    s = summary(scan, host, org)
    score = "n/a" if s["score"] is None else f"{s['score']}%"
    out = [f"# Compliance scan: {scan.policy.name}", "",
           f"- Host: {host}" + (f" ({org})" if org else ""), f"- Policy: `{scan.policy.id}` ({scan.policy.path})",
           f"- Scanned root: `{scan.root}` at {scan.started.isoformat(timespec='seconds')}",
           f"- Score: **{score}** — {s['passed']} passed, {s['failed']} failed, "
           f"{s['not_applicable']} not applicable, {s['error']} errors", ""]
    if not scan.requirements_met:
        out += [f"> {scan.requirements_reason}", ""]
    out += ["| ID | Severity | Result | Check | Reason | Compliance |", "|---|---|---|---|---|---|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in _rows(scan)]
    findings = [r for r in scan.results if r.status in (FAILED, ERROR)]
    if findings:
        out += ["", "## Findings (evidence and remediation)"]
    for r in findings:
        out += ["", f"### {r.check.id} {r.check.title} ({r.status}, {r.check.severity})", ""]
        if r.reason:
            out += [f"Reason: {r.reason}", ""]
        if r.check.remediation and r.status == FAILED:
            out += [f"Remediation: {r.check.remediation}", ""]
        out += [f"- {_code(item)}" for item in r.evidence]
        out += [f"- … and {r.evidence_more} more"] if r.evidence_more else []
    return "\n".join(out) + "\n"


def to_html(scan: ScanResult, host: str, org: str | None) -> str:
    s = summary(scan, host, org)
    esc = html.escape
    score = "n/a" if s["score"] is None else f"{s['score']}%"
    rows = "\n".join(
        f'<tr class="{esc(row[2]).replace(" ", "-")}">' + "".join(f"<td>{esc(c)}</td>" for c in row)
        + "<td>" + ("<ul>" + "".join(f"<li><code>{esc(e)}</code></li>" for e in r.evidence)
                    + (f"<li>… and {r.evidence_more} more</li>" if r.evidence_more else "") + "</ul>"
                    if r.evidence else "") + "</td></tr>"
        for row, r in zip(_rows(scan), scan.results, strict=True))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Compliance scan: {esc(scan.policy.name)}</title>
<style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px}}
.failed{{background:#fdd}}.passed{{background:#dfd}}.not-applicable{{background:#eee}}.error{{background:#fd9}}</style>
</head><body><h1>Compliance scan: {esc(scan.policy.name)}</h1>
<p>Host: {esc(host)}{f" ({esc(org)})" if org else ""} — policy <code>{esc(scan.policy.id)}</code> —
root <code>{esc(scan.root)}</code> — score <strong>{score}</strong>: {s['passed']} passed, {s['failed']} failed,
{s['not_applicable']} not applicable, {s['error']} errors.</p>
<table><thead><tr><th>ID</th><th>Severity</th><th>Result</th><th>Check</th><th>Reason</th><th>Compliance</th>
<th>Evidence</th></tr>
</thead><tbody>
{rows}
</tbody></table></body></html>
"""


def rollup(events: list[dict[str, Any]], by: str = "org") -> list[dict[str, Any]]:
    """Scores per organization (or host) over the latest scan of each (host, policy) among stored events."""
    latest: dict[tuple[str, str], tuple[str, str]] = {}
    for ev in events:
        key = (ev.get("host.name", ""), ev.get("soc.compliance.policy.id", ""))
        stamp = (ev.get("@timestamp", ""), ev.get("soc.compliance.scan.id", ""))
        if stamp > latest.get(key, ("", "")):
            latest[key] = stamp
    groups: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"hosts": set(), "scans": set(), PASSED: 0, FAILED: 0, NOT_APPLICABLE: 0, ERROR: 0})
    for ev in events:
        key = (ev.get("host.name", ""), ev.get("soc.compliance.policy.id", ""))
        if ev.get("soc.compliance.scan.id") != latest[key][1]:
            continue
        name = ev.get("organization.name") or "(none)" if by == "org" else ev.get("host.name", "")
        g = groups[name]
        g["hosts"].add(key[0])
        g["scans"].add(ev.get("soc.compliance.scan.id"))
        result = ev.get("soc.compliance.check.result")
        if result in g:
            g[result] += 1
    return [{by: name, "hosts": len(g["hosts"]), "scans": len(g["scans"]), "passed": g[PASSED],
             "failed": g[FAILED], "not_applicable": g[NOT_APPLICABLE], "error": g[ERROR],
             "score": _score(g[PASSED], g[FAILED])} for name, g in sorted(groups.items())]
