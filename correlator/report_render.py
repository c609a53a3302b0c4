"""Rendering of a `correlator.report.build` report: Markdown, one self-contained HTML file with charts, JSON.

The HTML needs no server and no network: its charts (alerts over time, alerts by severity) are drawn by matplotlib
as SVG and inlined, its style is inline. `lang="ar"` writes the fixed labels in Arabic, right to left; the
classification line at the top is always in both languages.
"""

from __future__ import annotations

import html
import io
import json
from typing import Any

from correlator.triage import SEVERITIES, human

FORMATS = ("md", "html", "json")
LANGS = ("en", "ar")
LABELS: dict[str, dict[str, str]] = {
    "daily": {"en": "Daily report", "ar": "التقرير اليومي"},
    "weekly": {"en": "Weekly report", "ar": "التقرير الأسبوعي"},
    "incident": {"en": "Incident report", "ar": "تقرير الحادثة"},
    "classification": {"en": "Classification", "ar": "التصنيف"},
    "period": {"en": "Period", "ar": "الفترة"},
    "generated": {"en": "Generated", "ar": "أُنشئ في"},
    "reader": {"en": "Reader", "ar": "القارئ"},
    "withheld": {"en": "Items above your clearance withheld", "ar": "عناصر محجوبة فوق تصريحك"},
    "summary": {"en": "Summary", "ar": "الملخص"},
    "alerts": {"en": "Alerts", "ar": "التنبيهات"},
    "suppressed": {"en": "Suppressed", "ar": "المكتومة"},
    "open": {"en": "Open", "ar": "مفتوحة"},
    "acknowledged": {"en": "Acknowledged", "ar": "مؤكدة الاستلام"},
    "in-progress": {"en": "In progress", "ar": "قيد المعالجة"},
    "closed": {"en": "Closed", "ar": "مغلقة"},
    "mtta": {"en": "Mean time to acknowledge", "ar": "متوسط زمن الاستلام"},
    "mttr": {"en": "Mean time to resolve", "ar": "متوسط زمن الحل"},
    "over_time": {"en": "Alerts over time", "ar": "التنبيهات عبر الزمن"},
    "by_severity": {"en": "Alerts by severity", "ar": "التنبيهات حسب الخطورة"},
    "by_organization": {"en": "Alerts by organization", "ar": "التنبيهات حسب الجهة"},
    "by_rule": {"en": "Alerts by rule", "ar": "التنبيهات حسب القاعدة"},
    "top_talkers": {"en": "Top talkers", "ar": "الأكثر تواصلاً"},
    "policy_violations": {"en": "Policy violations", "ar": "مخالفات السياسة"},
    "open_incidents": {"en": "Open incidents", "ar": "الحوادث المفتوحة"},
    "compliance": {"en": "Compliance status", "ar": "حالة الامتثال"},
    "severity": {"en": "Severity", "ar": "الخطورة"},
    "organization": {"en": "Organization", "ar": "الجهة"},
    "rule": {"en": "Rule", "ar": "القاعدة"},
    "day": {"en": "Day", "ar": "اليوم"},
    "ip": {"en": "Address", "ar": "العنوان"},
    "flows": {"en": "Flows", "ar": "التدفقات"},
    "bytes": {"en": "Bytes", "ar": "البايتات"},
    "id": {"en": "Number", "ar": "الرقم"},
    "title": {"en": "Title", "ar": "العنوان"},
    "assignee": {"en": "Assignee", "ar": "المكلّف"},
    "passed": {"en": "Passed", "ar": "ناجحة"},
    "failed": {"en": "Failed", "ar": "فاشلة"},
    "other": {"en": "Other", "ar": "أخرى"},
    "score": {"en": "Score", "ar": "النتيجة"},
    "none": {"en": "None", "ar": "لا يوجد"},
    "low": {"en": "low", "ar": "منخفضة"},
    "medium": {"en": "medium", "ar": "متوسطة"},
    "high": {"en": "high", "ar": "عالية"},
    "critical": {"en": "critical", "ar": "حرجة"},
}
SEVERITY_COLOURS = {"low": "#4c9f70", "medium": "#e0a030", "high": "#d9603b", "critical": "#a3162b"}
# (section, data key, columns): the tables every format shows, in order
TABLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("by_severity", "by_severity", ("severity", "alerts", "suppressed", "closed")),
    ("by_organization", "by_organization", ("organization", "alerts", "suppressed", "closed")),
    ("by_rule", "by_rule", ("rule", "alerts", "suppressed", "closed")),
    ("top_talkers", "top_talkers", ("ip", "flows", "bytes")),
    ("policy_violations", "policy_violations", ("rule", "alerts")),
    ("open_incidents", "open_incidents", ("id", "title", "severity", "assignee", "alerts")),
    ("compliance", "compliance", ("organization", "passed", "failed", "other", "score")),
)


def label(key: str, lang: str) -> str:
    return LABELS.get(key, {}).get(lang, key)


def _cell(column: str, value: Any, lang: str) -> str:
    if value is None:
        return "-"
    if column == "severity" and value in SEVERITIES:
        return label(value, lang)
    if column == "score":
        return f"{value}%"
    return str(value)


def heading(report: dict[str, Any], lang: str) -> list[tuple[str, str]]:
    """The lines under the title: classification (both languages), period, generated, reader, withheld."""
    lv = report["label"]
    title = label(report["kind"], lang) + (f" #{report['incident']}: {report['title']}" if report["incident"] else "")
    lines = [("", title),
             (f"{LABELS['classification']['en']} / {LABELS['classification']['ar']}",
              f"{lv['level']} / {lv['ar']} (rank {lv['rank']})"),
             (label("period", lang), f"{report['since']} – {report['until']}"),
             (label("generated", lang), report["generated"]),
             (label("reader", lang), f"{report['reader']} ({report['clearance']})")]
    if report["withheld"]:
        lines.append((label("withheld", lang), str(report["withheld"])))
    return lines


def summary(report: dict[str, Any], lang: str) -> list[tuple[str, str]]:
    a = report["alerts"]
    return [(label("alerts", lang), str(a["total"])), (label("suppressed", lang), str(a["suppressed"])),
            *((label(s, lang), str(a[s])) for s in ("open", "acknowledged", "in-progress", "closed")),
            (label("mtta", lang), human(report["mtta_s"])), (label("mttr", lang), human(report["mttr_s"]))]


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def to_markdown(report: dict[str, Any], lang: str = "en") -> str:
    head = heading(report, lang)
    out = [f"# {head[0][1]}", "", f"**{head[1][0]}: {head[1][1]}**", ""]
    out += [f"- {k}: {v}" for k, v in head[2:]] + ["", f"## {label('summary', lang)}", ""]
    out += [f"- {k}: {v}" for k, v in summary(report, lang)]
    for section, key, cols in TABLES:
        out += ["", f"## {label(section, lang)}", ""]
        rows = report[key]
        if not rows:
            out.append(label("none", lang))
            continue
        out += ["| " + " | ".join(label(c, lang) for c in cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(_cell(c, r.get(c), lang).replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _svg(fig: Any) -> str:
    """A matplotlib figure as an inline <svg> element (no XML prolog, text kept as text)."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    if "<metadata>" in text:  # the RDF block names Dublin Core / Creative Commons URLs: nothing a report needs
        text = text[:text.index("<metadata>")] + text[text.index("</metadata>") + len("</metadata>"):]
    return text


def charts(report: dict[str, Any]) -> dict[str, str]:
    """The two charts as inline SVG: alerts per day, alerts per severity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "soc-report", "font.size": 9}):
        fig, ax = plt.subplots(figsize=(6.4, 2.8))
        days = [r["day"] for r in report["by_day"]]
        ax.bar(days, [r["alerts"] for r in report["by_day"]], color="#2b6cb0")
        ax.set_ylabel("alerts")
        ax.tick_params(axis="x", labelrotation=30)
        fig.tight_layout()
        over_time = _svg(fig)
        fig, ax = plt.subplots(figsize=(6.4, 2.8))
        counts = {r["severity"]: r["alerts"] for r in report["by_severity"]}
        ax.bar(SEVERITIES, [counts.get(s, 0) for s in SEVERITIES], color=[SEVERITY_COLOURS[s] for s in SEVERITIES])
        ax.set_ylabel("alerts")
        fig.tight_layout()
        by_severity = _svg(fig)
    return {"over_time": over_time, "by_severity": by_severity}


STYLE = """body{font-family:"DejaVu Sans",sans-serif;margin:2em;color:#1a202c}
.label{border:2px solid #a3162b;color:#a3162b;padding:.4em;font-weight:bold;text-align:center}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #cbd5e0;padding:.2em .6em}
th{background:#edf2f7}figure{margin:0}figure svg{max-width:100%;height:auto}"""


def to_html(report: dict[str, Any], lang: str = "en") -> str:
    """One self-contained HTML page (inline style and SVG charts; right to left in Arabic)."""
    e = html.escape
    head = heading(report, lang)
    rtl = ' dir="rtl"' if lang == "ar" else ""
    out = [f'<!DOCTYPE html>\n<html lang="{lang}"{rtl}><head><meta charset="utf-8"><title>{e(head[0][1])}</title>',
           f"<style>{STYLE}</style></head><body>", f'<p class="label" id="classification">{e(head[1][0])}: '
           f"{e(head[1][1])}</p>", f"<h1>{e(head[0][1])}</h1><ul>"]
    out += [f"<li>{e(k)}: <bdi>{e(v)}</bdi></li>" for k, v in head[2:]]
    out += [f"</ul><h2>{e(label('summary', lang))}</h2><table>"]
    out += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in summary(report, lang)]
    out.append("</table>")
    for key, svg in charts(report).items():
        out.append(f'<h2>{e(label(key, lang))}</h2><figure id="chart-{key}" dir="ltr">{svg}</figure>')
    for section, key, cols in TABLES:
        out.append(f"<h2>{e(label(section, lang))}</h2>")
        if not report[key]:
            out.append(f"<p>{e(label('none', lang))}</p>")
            continue
        out.append("<table><tr>" + "".join(f"<th>{e(label(c, lang))}</th>" for c in cols) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{e(_cell(c, r.get(c), lang))}</td>" for c in cols) + "</tr>"
                for r in report[key]]
        out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)


def render(report: dict[str, Any], fmt: str, lang: str = "en") -> str:
    """The report as `fmt` (md, html, json) in `lang` (en, ar)."""
    return {"md": to_markdown, "html": to_html}[fmt](report, lang) if fmt != "json" else to_json(report)
