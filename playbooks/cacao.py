"""CACAO 2.0 playbooks: load (YAML or JSON, the same document), export, and validate.

A soc playbook is a CACAO 2.0 document; YAML is only its readable spelling (keys and values are CACAO's, 1:1).
soc's actions are CACAO `action` steps whose command has type `soc-action` and whose step_extensions, under the
soc extension (declared in extension_definitions as CACAO requires), hold `{action, args, approval, retries,
backoff}`; `playbook_extensions` under the same key binds external variables to alert/incident fields.

`validate` reports every problem at once, each with its JSON path: the OASIS schemas (playbooks/schemas, JSON
Schema 2019-09 keywords, resolved from a local registry, never the network) and soc's checks: unknown action,
missing variable, unreachable step, cycle outside a while, approval missing on a destructive step, and for a
playbook-action step the called playbook (in the library or next to the caller's file), its own problems and no
cycle between playbooks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft201909Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT201909

SCHEMAS = Path(__file__).parent / "schemas"
LIBRARY = Path(__file__).parent / "library"
SPEC = "cacao-2.0"
EXT = "extension-definition--5b0c4e6e-8f7c-4d0a-9a3e-50c0de1a2b3c"  # soc's action extension
COMMAND_TYPE = "soc-action"
VAR = re.compile(r"__[a-zA-Z_][a-zA-Z0-9_-]{0,199}__")
NEXT_KEYS = ("on_completion", "on_success", "on_failure", "on_true", "on_false")


class PlaybookError(ValueError):
    """A playbook cannot be read or is invalid; `problems` holds each as `path: reason`."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


@dataclass(frozen=True)
class Problem:
    path: str  # a JSON path, e.g. $.workflow['action--…'].commands[0]
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def read(path: str | Path) -> dict[str, Any]:
    """A playbook document from a .yml/.yaml/.json file (PlaybookError names the file when unreadable)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        doc = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PlaybookError(f"{p}: cannot read: {' '.join(str(exc).split())}") from None
    if not isinstance(doc, dict):
        raise PlaybookError(f"{p}: not a CACAO playbook (a mapping at the top)")
    return doc


def to_json(doc: dict[str, Any]) -> str:
    """CACAO JSON (the document as is: YAML and JSON carry the same keys)."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def to_yaml(doc: dict[str, Any]) -> str:
    """The readable YAML spelling, keys in authored order."""
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110)


def library() -> dict[str, Path]:
    """The shipped playbooks by file stem."""
    return {p.stem: p for p in sorted(LIBRARY.glob("*.yml"))}


def find(name: str) -> Path:
    """A library playbook by stem, or a path to a file."""
    lib = library()
    if name in lib:
        return lib[name]
    p = Path(name)
    if p.is_file():
        return p
    raise PlaybookError(f"no playbook {name!r}: not in {LIBRARY} ({', '.join(lib) or 'empty'}) nor a file")


@cache
def _validator() -> Draft201909Validator:
    resources = []
    for f in SCHEMAS.rglob("*.json"):
        schema = json.loads(f.read_text(encoding="utf-8"))
        resources.append((schema["$id"], Resource(contents=schema, specification=DRAFT201909)))
    registry = Registry().with_resources(resources)
    root = json.loads((SCHEMAS / "playbook.json").read_text(encoding="utf-8"))
    return Draft201909Validator(root, registry=registry)


def _path(parts: Any) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if re.fullmatch(r"[A-Za-z_]\w*", p) else f"[{p!r}]")
    return out


def schema_problems(doc: dict[str, Any]) -> list[Problem]:
    """What the OASIS schemas reject, each at its deepest JSON path."""
    out: list[Problem] = []
    for err in sorted(_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        leaves = _leaves(err)
        for e in leaves:
            out.append(Problem(_path(e.absolute_path), " ".join(e.message.split())[:300]))
    return list(dict.fromkeys(out))


def _leaves(err: Any) -> list[Any]:
    """The most specific errors under a combinator error (anyOf/allOf), else the error itself."""
    if not err.context:
        return [err]
    best = max(len(e.absolute_path) for e in err.context)
    if best <= len(err.absolute_path):
        return [err]
    return [e for sub in err.context if len(sub.absolute_path) == best for e in _leaves(sub)]


def soc_step(step: dict[str, Any]) -> dict[str, Any] | None:
    """The soc action of an action step ({action, args, ...}), or None."""
    ext = (step.get("step_extensions") or {}).get(EXT)
    return ext if isinstance(ext, dict) else None


def bindings(doc: dict[str, Any]) -> dict[str, str]:
    """External variables bound to alert/incident fields: {"__source_ip__": "source.ip", ...}."""
    ext = (doc.get("playbook_extensions") or {}).get(EXT) or {}
    return dict(ext.get("bind") or {})


def successors(step: dict[str, Any]) -> list[str]:
    """Every step a step may lead to."""
    return [t for _, t in links(step)]


def links(step: dict[str, Any]) -> list[tuple[str, str]]:
    """(JSON path below the step, target) of every step a step may lead to."""
    out = [(f".{k}", step[k]) for k in NEXT_KEYS if isinstance(step.get(k), str)]
    out += [(f".next_steps[{i}]", s) for i, s in enumerate(step.get("next_steps") or []) if isinstance(s, str)]
    cases = step.get("cases")
    if isinstance(cases, dict):
        out += [(f".cases[{k!r}]", s) for k, s in cases.items() if isinstance(s, str)]
    return out


def _reach(wf: dict[str, Any], heads: list[str], skip: tuple[str, list[str]] | None = None) -> set[str]:
    """The steps reachable from `heads` (`skip`: a parallel step whose branches are not followed)."""
    seen: set[str] = set()
    todo = list(heads)
    while todo:
        s = todo.pop()
        if s in seen or not isinstance(wf.get(s), dict):
            continue
        seen.add(s)
        todo += [t for t in successors(wf[s]) if not (skip and s == skip[0] and t in skip[1])]
    return seen


def _branch_problems(wf: dict[str, Any], start: str | None) -> list[Problem]:
    """CACAO 2.0 (parallel step): each branch ends at an end step of its own; it never leads back into the flow
    outside it (the parallel step, what comes before or after it) nor into a sibling branch."""
    out: list[Problem] = []
    if start is None or start not in wf:
        return out
    for pid, par in wf.items():
        if not isinstance(par, dict) or par.get("type") != "parallel":
            continue
        heads = [h for h in par.get("next_steps") or [] if isinstance(h, str) and h in wf]
        outside = _reach(wf, [start], (pid, heads)) | {pid}
        owner: dict[str, int] = {}
        for i, head in enumerate(heads):
            where = f"$.workflow[{pid!r}].next_steps[{i}]"
            if head in outside:
                out.append(Problem(where, f"branch {i} starts at {head}, which the flow outside the parallel step "
                                          "also runs: each branch must end at its own end step"))
                continue
            if head in owner:
                out.append(Problem(where, f"branch {i} starts at {head}, a step of branch {owner[head]}: each branch "
                                          "must end at its own end step"))
                continue
            seen, todo = {head}, [head]
            while todo:
                s = todo.pop()
                owner.setdefault(s, i)
                if not links(wf[s]) and wf[s].get("type") != "end":
                    out.append(Problem(f"$.workflow[{s!r}]", f"branch {i} of {pid} stops at this "
                                       f"{wf[s].get('type')} step: each branch must end at its own end step"))
                for link, t in links(wf[s]):
                    if not isinstance(wf.get(t), dict) or t in seen:
                        continue
                    if t in outside or owner.get(t, i) != i:
                        whose = "the flow outside the parallel step" if t in outside else f"branch {owner[t]}"
                        out.append(Problem(f"$.workflow[{s!r}]{link}", f"branch {i} of {pid} leads to {t}, a step of "
                                           f"{whose}: each branch must end at its own end step"))
                        continue
                    seen.add(t)
                    todo.append(t)
    return out


def soc_problems(doc: dict[str, Any], registry: dict[str, Any]) -> list[Problem]:
    """soc's own checks (the schemas pass or not): each problem with its JSON path."""
    out: list[Problem] = []
    if doc.get("spec_version") != SPEC:
        out.append(Problem("$.spec_version", f"soc reads {SPEC}, not {doc.get('spec_version')!r}"))
    wf = doc.get("workflow") if isinstance(doc.get("workflow"), dict) else {}
    declared = set(doc.get("playbook_variables") or {})
    bound = bindings(doc)
    for var in bound:
        if var not in declared:
            out.append(Problem(f"$.playbook_extensions[{EXT!r}].bind[{var!r}]", f"binds {var}, which "
                               "playbook_variables does not declare"))
    for var, spec in (doc.get("playbook_variables") or {}).items():
        if isinstance(spec, dict) and spec.get("external") and var not in bound and spec.get("value") is None:
            out.append(Problem(f"$.playbook_variables[{var!r}]", "external variable with no binding to an "
                               f"alert/incident field (playbook_extensions[{EXT!r}].bind) and no value"))
    uses_ext = (doc.get("playbook_extensions") or {}).get(EXT) is not None or any(
        isinstance(s, dict) and soc_step(s) is not None for s in wf.values())
    if uses_ext and EXT not in (doc.get("extension_definitions") or {}):
        out.append(Problem("$.extension_definitions", f"uses {EXT} without declaring it"))
    start = doc.get("workflow_start")
    if isinstance(start, str) and start not in wf:
        out.append(Problem("$.workflow_start", f"{start} is not a step of the workflow"))
    for sid, step in wf.items():
        if not isinstance(step, dict):
            continue
        base = f"$.workflow[{sid!r}]"
        for k in NEXT_KEYS:
            if isinstance(step.get(k), str) and step[k] not in wf:
                out.append(Problem(f"{base}.{k}", f"{step[k]} is not a step of the workflow"))
        for i, s in enumerate(step.get("next_steps") or []):
            if s not in wf:
                out.append(Problem(f"{base}.next_steps[{i}]", f"{s} is not a step of the workflow"))
        local = set(step.get("step_variables") or {})
        if step.get("type") == "action":
            act = soc_step(step)
            if act is None:
                out.append(Problem(f"{base}.step_extensions", f"an action step needs the soc action under {EXT}"))
                continue
            name = act.get("action")
            cls = registry.get(name)
            if cls is None:
                out.append(Problem(f"{base}.step_extensions[{EXT!r}].action",
                                   f"unknown action {name!r} (known: {', '.join(sorted(registry)) or 'none'})"))
            elif getattr(cls, "destructive", False) and not act.get("approval"):
                out.append(Problem(f"{base}.step_extensions[{EXT!r}].approval",
                                   f"{name} is destructive: the step needs approval: true"))
            cmds = step.get("commands") or []
            if not any(isinstance(c, dict) and c.get("type") == COMMAND_TYPE for c in cmds):
                out.append(Problem(f"{base}.commands", f"a soc action step needs a command of type {COMMAND_TYPE}"))
        for path, text in _strings(step, base):
            for var in VAR.findall(text):
                if var not in declared and var not in local:
                    out.append(Problem(path, f"uses {var}, which playbook_variables does not declare"))
    out += _graph_problems(wf, start if isinstance(start, str) else None)
    out += _branch_problems(wf, start if isinstance(start, str) else None)
    return out


def _strings(node: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(node, str):
        return [(path, node)]
    if isinstance(node, dict):
        return [x for k, v in node.items() if k != "step_variables"
                for x in _strings(v, f"{path}[{k!r}]" if not re.fullmatch(r"[A-Za-z_]\w*", k) else f"{path}.{k}")]
    if isinstance(node, list):
        return [x for i, v in enumerate(node) for x in _strings(v, f"{path}[{i}]")]
    return []


def _graph_problems(wf: dict[str, Any], start: str | None) -> list[Problem]:
    out: list[Problem] = []
    if start is None or start not in wf:
        return out
    seen: set[str] = set()
    todo = [start]
    while todo:
        s = todo.pop()
        if s in seen or s not in wf or not isinstance(wf[s], dict):
            continue
        seen.add(s)
        todo += successors(wf[s])
    for sid in wf:
        if sid not in seen:
            out.append(Problem(f"$.workflow[{sid!r}]", "unreachable from workflow_start"))
    # a cycle is allowed only through a while-condition's loop body (on_true) back to the while step
    color: dict[str, int] = {}

    def visit(s: str, stack: list[str]) -> None:
        color[s] = 1
        step = wf.get(s) or {}
        for n in successors(step):
            if n not in wf:
                continue
            if color.get(n) == 1:
                loop = stack[stack.index(n):] + [s]
                if not any((wf.get(x) or {}).get("type") == "while-condition" for x in loop):
                    out.append(Problem(f"$.workflow[{s!r}]", f"cycle back to {n} outside a while-condition"))
            elif n not in color:
                visit(n, stack + [n])
        color[s] = 2

    visit(start, [start])
    return out


def validate(doc: dict[str, Any], registry: dict[str, Any] | None = None, near: Path | None = None,
             chain: tuple[tuple[str, str], ...] = ()) -> list[Problem]:
    """Every problem with the playbook: the OASIS schemas' and soc's, and those of the playbooks it calls
    (playbook-action, found by `resolve` from `near`, the playbook's file) (empty: valid)."""
    if registry is None:
        from playbooks.actions import load_all
        registry = load_all()
    here = (*chain, (str(doc.get("id")), near.stem if near else str(doc.get("name"))))
    return list(dict.fromkeys(schema_problems(doc) + soc_problems(doc, registry) + call_problems(doc, registry, near,
                                                                                                 here)))


def resolve(playbook_id: str, near: Path | None = None) -> Path:
    """The file of the playbook with this CACAO id: in the library, else next to `near` (the calling playbook's
    file: the set it was written or imported with)."""
    for folder in (LIBRARY, *((near.parent,) if near and near.parent.resolve() != LIBRARY.resolve() else ())):
        found = _ids(folder, folder == LIBRARY).get(playbook_id)
        if found:
            return found
    where = f"{LIBRARY}" + (f" nor in {near.parent}" if near else "")
    raise PlaybookError(f"no playbook with id {playbook_id} in {where}")


def _ids(folder: Path, fixed: bool) -> dict[str, Path]:
    """{CACAO id: file} of the playbooks in `folder` (the library's once; unreadable files are not playbooks)."""
    return _library_ids() if fixed else _scan(folder)


@cache
def _library_ids() -> dict[str, Path]:
    return _scan(LIBRARY)


def _scan(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.suffix in (".yml", ".yaml", ".json") and p.is_file():
            try:
                doc = read(p)
            except PlaybookError:
                continue
            if doc.get("type") == "playbook" and isinstance(doc.get("id"), str):
                out.setdefault(doc["id"], p)
    return out


def call_problems(doc: dict[str, Any], registry: dict[str, Any], near: Path | None,
                  chain: tuple[tuple[str, str], ...]) -> list[Problem]:
    """playbook-action steps: the playbook found, no cycle between playbooks, in_args/out_args declared by the
    called playbook, and its own problems (each under the step's `playbook_id`)."""
    out: list[Problem] = []
    wf = doc.get("workflow") if isinstance(doc.get("workflow"), dict) else {}
    for sid, step in wf.items():
        if not isinstance(step, dict) or step.get("type") != "playbook-action" or not isinstance(
                step.get("playbook_id"), str):
            continue
        at = f"$.workflow[{sid!r}]"
        try:
            path = resolve(step["playbook_id"], near)
            child = read(path)
        except PlaybookError as exc:
            out.append(Problem(f"{at}.playbook_id", str(exc)))
            continue
        if any(step["playbook_id"] == pid for pid, _ in chain):
            loop = " → ".join([name for _, name in chain] + [path.stem])
            out.append(Problem(f"{at}.playbook_id", f"a cycle between playbooks: {loop}"))
            continue
        declared = set(child.get("playbook_variables") or {})
        for field in ("in_args", "out_args"):
            for i, name in enumerate(step.get(field) or []):
                if name not in declared:
                    out.append(Problem(f"{at}.{field}[{i}]", f"{path.stem} does not declare {name}"))
        for p in validate(child, registry, path, chain):
            out.append(Problem(f"{at}.playbook_id", f"{path.stem}: {p}"))
    return out
