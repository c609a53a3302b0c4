"""The triage console: the alert queue, one alert's detail and the analyst's actions, in a terminal (Textual).

The console only shows and asks: every read goes through the read gate it is given, every action is one call to
the library (`correlator.triage` for the workflow and suppressions, `correlator.incidents` for incidents,
`correlator.pivots` for related events and the timeline), so clearance, withheld counts, history and audit entries
are the library's, exactly as with `soc alerts ...`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Label, OptionList, Static

from correlator import incidents, pivots, triage
from correlator.gate import Gate, Read
from correlator.query import QueryError
from correlator.store import StoreError

# The status filter cycles through these views (`f`): the default queue is everything not closed.
STATUS_VIEWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("queue", triage.OPEN), *((s, (s,)) for s in triage.STATUSES), ("all", triage.STATUSES))
SEVERITY_STYLE = {"low": "green", "medium": "yellow", "high": "bold red", "critical": "bold white on red"}
MATCH = "bold black on yellow"  # a value of the alert's group key, wherever it appears
RELATED = 20  # related events shown in the detail pane
FAILURES = (triage.Refused, QueryError, incidents.IncidentError, pivots.PivotError, StoreError, ValueError)


def key_terms(alert: dict[str, Any]) -> list[tuple[str, str]]:
    """The alert's group key as (field, value) pairs: what its events had in common when the rule fired."""
    out = []
    for t in alert.get("soc.alert.suppression.terms") or []:
        for v in t["value"] if isinstance(t["value"], list) else [t["value"]]:
            out.append((t["field"], str(v)))
    return out


def _withheld_line(read: Read, kind: str, gate: Gate) -> Text | None:
    if not read.withheld:
        return None
    return Text(f"{read.withheld} {kind} above your clearance ({gate.reader.level.name}) withheld", style="yellow")


class Prompt(ModalScreen[dict[str, str] | None]):
    """A small form: an optional choice list, then text fields. Enter moves on and submits; Escape cancels."""

    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, fields: list[tuple[str, str, str]], choices: tuple[str, ...] = (),
                 choice_name: str = "") -> None:
        super().__init__()
        self.title_text, self.fields, self.choices, self.choice_name = title, fields, choices, choice_name
        self.chosen: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Label(Text(self.title_text, style="bold"))
            if self.choices:
                yield OptionList(*self.choices, id="choice")
            for name, label, default in self.fields:
                yield Label(label)
                yield Input(value=default, id=f"f-{name}")

    def on_mount(self) -> None:
        if self.choices:
            self.query_one(OptionList).highlighted = 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.chosen = str(event.option.prompt)
        if self.fields:
            self.query_one(f"#f-{self.fields[0][0]}", Input).focus()
        else:
            self._submit()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        inputs = list(self.query(Input))
        at = inputs.index(event.input)
        if at + 1 < len(inputs):
            inputs[at + 1].focus()
        else:
            self._submit()

    def _submit(self) -> None:
        values = {name: self.query_one(f"#f-{name}", Input).value for name, _, _ in self.fields}
        if self.choices:
            values[self.choice_name] = self.chosen or ""
        self.dismiss(values)

    def action_cancel(self) -> None:
        self.dismiss(None)


class TimelineScreen(Screen[None]):
    """What the alert's addresses did around it (correlator.pivots.timeline), oldest first; Escape goes back."""

    BINDINGS: ClassVar = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, tl: pivots.Timeline, gate: Gate, marks: list[str]) -> None:
        super().__init__()
        self.tl, self.gate, self.marks = tl, gate, marks

    def compose(self) -> ComposeResult:
        head = Text(f"timeline of {', '.join(self.tl.ips)}: {len(self.tl.items)} rows", style="bold")
        for line in (_withheld_line(self.tl.events, "events", self.gate),
                     _withheld_line(self.tl.alerts, "alerts", self.gate)):
            if line:
                head.append("\n").append(line)
        yield Static(head, id="tl-head")
        table: DataTable[Any] = DataTable(id="timeline", cursor_type="row", zebra_stripes=True)
        table.add_columns("@timestamp", "what", "source", "destination", "label", "summary")
        for it in self.tl.items:
            what = "ALERT" if "soc.alert.uuid" in it else str(it.get("event.dataset", "")).removeprefix("soc.")
            cells = [it["@timestamp"], what, _endpoint(it, "source"), _endpoint(it, "destination"),
                     str(it.get("gov.label.level") or "-"), pivots.summary(it)]
            table.add_row(*(_marked(c, self.marks) for c in cells))
        yield table
        yield Footer()


def _endpoint(item: dict[str, Any], side: str) -> str:
    ip, port = item.get(f"{side}.ip"), item.get(f"{side}.port")
    return f"{ip}:{port}" if ip and port is not None else str(ip or "")


def _marked(text: str, marks: list[str]) -> Text:
    t = Text(text)
    t.highlight_words(marks, style=MATCH)
    return t


class TriageApp(App[None]):
    """The queue (left), the highlighted alert's detail (right), actions on keys (footer)."""

    TITLE = "soc triage"
    CSS = """
    #bar { height: auto; padding: 0 1; background: $boost; }
    #msg { height: 1; padding: 0 1; }
    #queue { width: 3fr; }
    #detail-pane { width: 2fr; border-left: solid $primary; padding: 0 1; }
    Prompt { align: center middle; }
    #form { width: 70; height: auto; border: thick $primary; padding: 1 2; background: $surface; }
    #form OptionList { height: auto; max-height: 8; }
    """
    BINDINGS: ClassVar = [
        Binding("a", "ack", "Ack"), Binding("w", "assign", "Assign"), Binding("c", "close_alert", "Close"),
        Binding("n", "note", "Note"), Binding("x", "suppress", "Suppress"), Binding("i", "incident", "Incident"),
        Binding("t", "timeline", "Timeline"), Binding("f", "status_view", "Status"),
        Binding("v", "severity", "Severity"), Binding("g", "group", "By rule"), Binding("r", "reload", "Refresh"),
        Binding("escape", "clear_rule", "All rules", show=False), Binding("q", "quit", "Quit"),
    ]

    def __init__(self, gate: Gate, limit: int = 500, now: str | None = None) -> None:
        super().__init__()
        self.gate, self.limit, self.now = gate, limit, now
        self.filters = triage.Filters()
        self.view = 0  # index in STATUS_VIEWS
        self.grouped = False
        self.alerts: dict[str, dict[str, Any]] = {}
        self.current: dict[str, Any] | None = None
        self._around: dict[str, tuple[dict[str, Any], Read] | str] = {}  # uuid -> related events (or why none)
        self.queue_read: triage.Queue | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="bar")
        with Horizontal():
            yield DataTable(id="queue", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="detail-pane"):
                yield Static(id="detail")
        yield Static(id="msg")
        yield Footer()

    def on_mount(self) -> None:
        self.reload()

    # -- the queue ---------------------------------------------------------------------------------------------------

    def reload(self, keep: str | None = None) -> None:
        """Read the queue through the gate (triage.queue) and redraw it; the cursor stays on `keep` if listed."""
        self._around.clear()
        try:
            self.queue_read = triage.queue(self.gate, self.filters, self.limit, self.now)
        except FAILURES as exc:
            self.say(str(exc), error=True)
            return
        items = self.queue_read.items
        self.alerts = {a["soc.alert.uuid"]: a for a in items}
        table = self.query_one("#queue", DataTable)
        table.clear(columns=True)
        if self.grouped:
            table.add_columns("rule", "alerts", "events", "max risk")
            for row in triage.group(items, "rule"):
                table.add_row(str(row["rule"]), row["alerts"], row["events"], row["max_risk"], key=str(row["rule"]))
        else:
            table.add_columns("sev", "risk", "status", "assignee", "n", "key", "rule")
            for a in items:
                sev = a.get("soc.alert.severity") or "-"
                table.add_row(Text(sev, style=SEVERITY_STYLE.get(sev, "")), a.get("soc.alert.risk_score"),
                              triage.status_of(a), ",".join(a.get("soc.alert.assignees") or []) or "-",
                              a.get("soc.alert.suppression.docs_count") or 1, " ".join(v for _, v in key_terms(a)),
                              a.get("soc.alert.rule.name") or a.get("soc.alert.rule.uuid"), key=a["soc.alert.uuid"])
            if keep in self.alerts:
                table.move_cursor(row=table.get_row_index(keep))
        self._bar()
        if not items or self.grouped:
            self.current = None
            self.query_one("#detail", Static).update(
                Text("Enter: list this rule's alerts" if items else "no alerts in this view", style="dim"))
        else:
            self.show(list(self.alerts)[table.cursor_row])

    def _bar(self) -> None:
        q = self.queue_read
        assert q is not None
        r = self.gate.reader
        t = Text()
        t.append(f"{r.user}", style="bold").append(f" at {r.level.name} (rank {r.rank})  ")
        t.append(f"status: {STATUS_VIEWS[self.view][0]}  severity ≥ {self.filters.min_severity or 'any'}  ")
        t.append(f"rule: {self.filters.rule or 'all'}  {'grouped by rule  ' if self.grouped else ''}")
        t.append(f"{len(q.items)} alerts", style="bold")
        if q.withheld:
            t.append(f"  {q.withheld} above your clearance withheld", style="yellow")
        if q.suppressed.total:
            t.append(f"  {q.suppressed.total} suppressed", style="yellow")
        self.query_one("#bar", Static).update(t)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "queue" and not self.grouped and event.row_key.value in self.alerts:
            self.show(event.row_key.value)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "queue" and self.grouped:  # a rule: list its alerts
            self.filters.rule, self.grouped = event.row_key.value, False
            self.reload()

    # -- the detail pane ---------------------------------------------------------------------------------------------

    def show(self, uuid: str) -> None:
        """Why the alert fired (its rule, reason, matched key), its history and the events around it."""
        a = self.current = self.alerts[uuid]
        marks = [v for _, v in key_terms(a)]
        t = Text()
        t.append(f"{a.get('soc.alert.rule.name')}\n", style="bold")
        sev = a.get("soc.alert.severity") or "-"
        t.append(sev, style=SEVERITY_STYLE.get(sev, "")).append(
            f" · risk {a.get('soc.alert.risk_score')} · {triage.status_of(a)} · "
            f"assigned {', '.join(a.get('soc.alert.assignees') or []) or '-'}\n")
        if a.get("gov.label.level"):
            t.append(f"classification: {a['gov.label.level']}\n", style="magenta")
        t.append(f"id {uuid}\n", style="dim")
        t.append("\nWhy it fired\n", style="bold underline")
        t.append(f"{a.get('soc.alert.reason') or a.get('soc.alert.rule.description') or '-'}\n")
        t.append(f"rule {a.get('soc.alert.rule.uuid')} ({a.get('soc.alert.rule.level') or '-'})\n", style="dim")
        for th in a.get("soc.alert.rule.threat") or []:
            techs = ", ".join(x["id"] for x in th.get("technique", []))
            t.append(f"ATT&CK {', '.join(x['name'] for x in th.get('tactic', []))} {techs}\n")
        t.append(f"{a.get('soc.alert.suppression.docs_count') or 1} events "
                 f"{a.get('soc.alert.suppression.start')} → {a.get('soc.alert.suppression.end')}\n")
        t.append("matched: ")
        for f, v in key_terms(a):
            t.append(f"{f}=").append(v, style=MATCH).append("  ")
        orig = a.get("soc.alert.original_event.dataset")
        t.append(f"\nfirst event: {orig or '-'} {a.get('soc.alert.original_event.id') or ''}\n", style="dim")
        history = a.get("soc.alert.history") or []
        t.append(f"\nHistory ({len(history)})\n", style="bold underline")
        for h in history:
            t.append(f"{h.get('at')} {h.get('by')} {h.get('action')} {h.get('from')}→{h.get('to')}"
                     + "".join(f" {h[k]}" for k in ("reason", "comment") if h.get(k)) + "\n")
        t.append("\nRelated events\n", style="bold underline")
        related = self._related(uuid)
        if isinstance(related, str):
            t.append(related + "\n", style="dim")
        else:
            _, read = related
            for ev in read.items:
                line = Text(f"{ev['@timestamp'][11:23]} {str(ev.get('event.dataset', '')).removeprefix('soc.')} "
                            f"{_endpoint(ev, 'source')} → {_endpoint(ev, 'destination')} {pivots.summary(ev)}\n")
                line.highlight_words(marks, style=MATCH)
                t.append(line)
            if line_w := _withheld_line(read, "events", self.gate):
                t.append(line_w)
        self.query_one("#detail", Static).update(t)

    def _related(self, uuid: str) -> tuple[dict[str, Any], Read] | str:
        """The events of the alert's key around it (correlator.pivots.around), read once per alert and reload."""
        if uuid not in self._around:
            try:
                self._around[uuid] = pivots.around(self.gate, uuid, limit=RELATED)
            except FAILURES as exc:
                self._around[uuid] = str(exc)
        return self._around[uuid]

    # -- actions -----------------------------------------------------------------------------------------------------

    def say(self, message: str, error: bool = False) -> None:
        """The outcome of the last action, on the line above the footer."""
        self.query_one("#msg", Static).update(Text(message, style="bold red" if error else "green"))

    def _selected(self) -> dict[str, Any] | None:
        if self.current is None:
            self.say("select an alert first", error=True)
        return self.current

    def _change(self, action: str, **kw: Any) -> None:
        """One workflow change of the selected alert (triage.change_alerts: checked, history, audit)."""
        a = self._selected()
        if a is None:
            return
        uuid = a["soc.alert.uuid"]
        try:
            out = triage.change_alerts(self.gate, triage.Change(action, self.gate.reader.user, triage.now_iso(),
                                                                **kw), [uuid])
        except FAILURES as exc:
            self.say(str(exc), error=True)
            return
        if out.refused:
            self.say(f"{action} refused: {out.refused[0][1]}", error=True)
        else:
            h = out.changed[0]["soc.alert.history"][-1]
            self.say(f"{action} {uuid[:12]}: {h['from'] or '-'} → {h['to']}")
        self.reload(keep=uuid)

    def _ask(self, prompt: Prompt, then: Any) -> None:
        if self._selected() is not None:
            self.push_screen(prompt, lambda values: then(values) if values is not None else None)

    def action_ack(self) -> None:
        self._change("ack")

    def action_assign(self) -> None:
        self._ask(Prompt("Assign the alert to", [("user", "User", self.gate.reader.user)]),
                  lambda v: self._change("assign", assignee=v["user"].strip()))

    def action_close_alert(self) -> None:
        self._ask(Prompt("Close the alert: reason", [("comment", "Comment (optional)", "")], triage.CLOSE_REASONS,
                         "reason"),
                  lambda v: self._change("close", reason=v["reason"], comment=v["comment"].strip() or None))

    def action_note(self) -> None:
        self._ask(Prompt("Add a note", [("text", "Note", "")]), lambda v: self._change("note", comment=v["text"]))

    def action_suppress(self) -> None:
        a = self.current
        key = " ".join(f"{f}:{v}" for f, v in key_terms(a)[:1]) if a else ""
        self._ask(Prompt("Suppress this rule's alerts for a key", [("where", "Key (field:value)", key),
                                                                   ("for", "For (30m, 24h, 7d)", "24h"),
                                                                   ("reason", "Reason", "")]), self._suppress)

    def _suppress(self, v: dict[str, str]) -> None:
        a = self.current
        assert a is not None
        try:
            sup = triage.suppress(self.gate, a["soc.alert.rule.uuid"], v["where"], v["for"], v["reason"],
                                  self.gate.reader.user)
        except FAILURES as exc:
            self.say(str(exc), error=True)
            return
        self.say(f"suppressed {sup.id}: {sup.rule_name} where {sup.where} until {sup.until}")
        self.reload()

    def action_incident(self) -> None:
        a = self.current
        self._ask(Prompt("Add the alert to an incident", [
            ("number", "Incident number (empty: a new incident)", ""),
            ("title", "Title of a new incident", str(a.get("soc.alert.rule.name") or "") if a else "")]),
            self._incident)

    def _incident(self, v: dict[str, str]) -> None:
        a = self.current
        assert a is not None
        try:
            alerts = incidents.select_alerts(self.gate, [a["soc.alert.uuid"]]).items
            number = v["number"].strip()
            if number:
                if not number.isdigit():
                    raise incidents.IncidentError(f"incident number {number!r}: expected a number")
                doc = incidents.add(self.gate, int(number), alerts)
            else:
                doc = incidents.create(self.gate, v["title"], alerts)
        except FAILURES as exc:
            self.say(str(exc), error=True)
            return
        self.say(f"incident {doc[incidents.P + 'id']}: {doc[incidents.P + 'title']} "
                 f"({len(doc[incidents.P + 'alerts'])} alerts)")

    def action_timeline(self) -> None:
        a = self._selected()
        if a is None:
            return
        ips = [v for f, v in key_terms(a) if f.endswith(".ip")]
        start, end = pivots.alert_span(a)
        try:
            tl = pivots.timeline(self.gate, ips, since=start - pivots.DEFAULT_WINDOW,
                                 until=end + pivots.DEFAULT_WINDOW + pivots.TICK)
        except FAILURES as exc:
            self.say(str(exc), error=True)
            return
        self.push_screen(TimelineScreen(tl, self.gate, [v for _, v in key_terms(a)]))

    def action_status_view(self) -> None:
        self.view = (self.view + 1) % len(STATUS_VIEWS)
        self.filters.statuses = STATUS_VIEWS[self.view][1]
        self.reload(keep=self.current and self.current["soc.alert.uuid"])

    def action_severity(self) -> None:
        order = (None, *triage.SEVERITIES)
        self.filters.min_severity = order[(order.index(self.filters.min_severity) + 1) % len(order)]
        self.reload(keep=self.current and self.current["soc.alert.uuid"])

    def action_group(self) -> None:
        self.grouped = not self.grouped
        self.reload()

    def action_clear_rule(self) -> None:
        if self.filters.rule:
            self.filters.rule = None
            self.reload()

    def action_reload(self) -> None:
        self.reload(keep=self.current and self.current["soc.alert.uuid"])
