"""Doc transcripts: the `soc` commands of README.md and docs/*.md, extracted and run as a user would run them.

Conventions (also in README.md, "Documentation"):
- Fenced blocks marked ```bash, ```sh or ```console are read, in document order. In bash/sh blocks every line is a
  command; in console blocks commands start with `$ ` and the lines after one, up to the next `$ ` or the fence,
  are its expected output.
- Each command that runs `soc` (also as `.venv/bin/soc`, in a pipe or `$(…)`) is one example. In an `a && b` chain
  only the parts that run soc or set shell state are run: install steps (venv, pip) are what set-up did. Other
  commands (docker, pytest, …) are instructions for the reader and are not run. `export`, `unset` and assignments
  are run and carry over to the following commands of the same document.
- Expected output: every non-blank expected line must occur in the command's stdout+stderr, in order, with runs of
  white space counted as one; `…` elides text (the parts around it must occur in that order).
- Markers, as a comment on the command's line or on the line before it:
  `# doc-test: exit N` (the exit code the doc states; `exit 0|1` when it depends on the host),
  `# doc-test: stop after S s` (SIGINT after S seconds, then exit 0 expected: for `--follow`),
  `# doc-test: skip (reason)` (not run; reported as skipped with that reason).
- `localhost:9200` / `127.0.0.1:9200` is the Elasticsearch emulator the suite starts (noida-db, tests/es_server.py).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL_FENCES = {"bash", "sh", "console", "shell"}
MARKER = re.compile(r"#\s*doc-test:\s*(.*)$")
SOC_WORD = re.compile(r"(?:^|[\s|&;(/`])soc(?:\s|$)")
STATE = re.compile(r"^(?:(?:export|unset|cd)\s.*|[A-Za-z_]\w*=(?:\$\(.*\)|\"[^\"]*\"|'[^']*'|[^\s'\"]*))\s*$")
ES_ADDRESS = re.compile(r"(?:localhost|127\.0\.0\.1):9200")
SHELL_ONLY = {"_", "SHLVL", "OLDPWD"}


@dataclass
class Example:
    """One command of a document, with what the document says it does."""

    doc: str
    line: int
    command: str
    expected: list[str] = field(default_factory=list)
    exits: tuple[int, ...] = (0,)
    skip: str | None = None
    stop_after: float | None = None
    is_test: bool = True  # False: a state line (export, unset, assignment) run only for the ones after it

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def key(self) -> str:
        """The command without its trailing comment, white space collapsed (stable across re-alignment)."""
        return " ".join(re.sub(r"\s{2,}#.*$", "", self.command).split())


@dataclass
class Result:
    code: int
    output: str


def documents() -> list[Path]:
    """README.md, then docs/*.md in name order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def split_chain(command: str) -> list[str]:
    """Split a command at top-level `&&` (outside quotes and `$(…)`)."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(command):
        c = command[i]
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif command.startswith("$(", i):
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif command.startswith("&&", i) and not depth:
            parts.append(command[start:i].strip())
            start = i + 2
            i += 1
        i += 1
    parts.append(command[start:].strip())
    return [p for p in parts if p]


def _apply_markers(example: Example, markers: list[str], where: str) -> None:
    for marker in markers:
        if m := re.fullmatch(r"skip\s*\((.+)\)", marker):
            example.skip = m.group(1)
        elif m := re.fullmatch(r"exit\s+(\d+(?:\|\d+)*)", marker):
            example.exits = tuple(int(x) for x in m.group(1).split("|"))
        elif m := re.fullmatch(r"stop after\s+([\d.]+)\s*s", marker):
            example.stop_after = float(m.group(1))
        else:
            raise ValueError(f"{where}: unknown doc-test marker {marker!r}")


def _command(doc: str, line: int, text: str, markers: list[str]) -> Example | None:
    """The example for one written command, or None when nothing of it is run."""
    text = text.strip()
    if m := MARKER.search(text):
        markers = [*markers, m.group(1).strip()]
    kept = [p for p in split_chain(text) if SOC_WORD.search(MARKER.sub("", p)) or STATE.match(p)]
    if not kept:
        return None
    example = Example(doc, line, " && ".join(kept))
    example.is_test = any(SOC_WORD.search(MARKER.sub("", p)) for p in kept)
    _apply_markers(example, markers, f"{doc}:{line}")
    return example


def extract(path: Path) -> list[Example]:
    """The examples of one document, in order."""
    doc = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    examples: list[Example] = []
    fence: str | None = None
    markers: list[str] = []
    pending, pending_line = "", 0
    current: Example | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = raw.strip()
        if fence is None:
            if stripped.startswith("```"):
                fence = stripped[3:].strip().lower()
                markers, current = [], None
            continue
        if stripped.startswith("```"):
            fence = None
            continue
        if fence not in SHELL_FENCES:
            continue
        console = fence == "console"
        if console and not stripped.startswith("$") and not pending:
            if current is not None and stripped:
                current.expected.append(stripped)
            continue
        text = stripped[1:].strip() if console and not pending else stripped
        if not pending and (not text or text.startswith("#")):
            if m := MARKER.search(text):  # a comment line's marker applies to the next command
                markers.append(m.group(1).strip())
            continue
        if text.endswith("\\"):
            pending, pending_line = pending + text[:-1].rstrip() + " ", pending_line or number
            continue
        text, line = pending + text, pending_line or number
        pending, pending_line = "", 0
        current = _command(doc, line, text, markers)
        markers = []
        if current is not None:
            examples.append(current)
    return examples


def matches(expected: list[str], output: str) -> str | None:
    """None when every expected line occurs in `output` in order; else the first line missing."""
    text = " ".join(output.split())
    at = 0
    for line in expected:
        for fragment in (" ".join(f.split()) for f in line.split("…")):
            if not fragment:
                continue
            found = text.find(fragment, at)
            if found < 0:
                return line
            at = found + len(fragment)
    return None


class Transcript:
    """One document's commands run in order in a sandbox of its own (HOME, XDG dirs, cwd)."""

    def __init__(self, doc: str, examples: list[Example], sandbox: Path, es_url: str | None = None) -> None:
        self.doc, self.examples, self.es_url = doc, examples, es_url
        self.results: dict[int, Result] = {}
        self.done = 0
        self.cwd = sandbox / "work"
        home = sandbox / "home"
        self.cwd.mkdir(parents=True)
        home.mkdir()
        for entry in ROOT.iterdir():  # the repository's relative paths (rules/…, deploy/…) resolve from cwd
            if not entry.name.startswith(".") and entry.name != "soc.egg-info":
                (self.cwd / entry.name).symlink_to(entry)
        (self.cwd / ".venv").symlink_to(sys.prefix)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SOC_", "XDG_", "PYTEST", "COV_"))}
        self.env.update(HOME=str(home), XDG_DATA_HOME=str(home / ".local/share"),
                        XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
                        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
                        COLUMNS="160", PWD=str(self.cwd))
        self.env.pop("VIRTUAL_ENV", None)

    def run_to(self, example: Example) -> Result:
        """Run every command of the document up to and including `example` (each once); its result."""
        index = self.examples.index(example)
        while self.done <= index:
            ex = self.examples[self.done]
            if ex.skip is None:
                self.results[self.done] = self._run(ex)
            self.done += 1
        return self.results[index]

    def _run(self, example: Example) -> Result:
        command = example.command
        if self.es_url:
            command = ES_ADDRESS.sub(self.es_url.split("://", 1)[1], command)
        state = self.cwd.parent / "state.env"
        script = f"set -a -o pipefail\n{command}\n__rc=$?\nenv -0 > {state}\nexit $__rc\n"
        started = time.monotonic()
        proc = subprocess.Popen(["bash", "-c", script], cwd=self.env.get("PWD", self.cwd), env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if example.stop_after is not None:
                try:
                    out, _ = proc.communicate(timeout=example.stop_after)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGINT)
                    out, _ = proc.communicate(timeout=60)
            else:
                out, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            out += f"\n[doc-test: killed after {time.monotonic() - started:.0f} s]".encode()
        if state.exists():
            pairs = (item.split("=", 1) for item in state.read_text().split("\0") if "=" in item)
            self.env = {k: v for k, v in pairs if k not in SHELL_ONLY}
            state.unlink()
        return Result(proc.returncode, out.decode(errors="replace"))
