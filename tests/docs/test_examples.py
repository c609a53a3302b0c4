"""Every `soc` example of README.md and docs/*.md, run as written, in document order, in a sandbox.

One test per command, named `DOC:LINE`; the conventions (expected output, markers) are in `transcript.py` and in
README.md, "Documentation". A doc that drifts from the code fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from transcript import ES_ADDRESS, Example, Transcript, documents, extract, matches

# Examples that fail because of a known product defect being fixed elsewhere: (doc, command without its comment)
# -> the defect.
# Strict: once the defect is fixed the example passes and this entry must go.
KNOWN_DEFECTS: dict[tuple[str, str], str] = {}

pytestmark = pytest.mark.docs

EXAMPLES: list[Example] = [ex for path in documents() for ex in extract(path)]


def _param(example: Example):  # noqa: ANN202 - pytest.param's type is private
    marks = []
    if example.skip:
        marks.append(pytest.mark.skip(reason=f"{example.id}: {example.skip}"))
    if reason := KNOWN_DEFECTS.get((example.doc, example.key)):
        marks.append(pytest.mark.xfail(strict=True, reason=reason))
    return pytest.param(example, id=example.id, marks=marks)


@pytest.fixture(scope="module")
def es_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """The ES emulator for examples that name localhost:9200, started only if one runs."""
    servers = []

    def start() -> str:
        if not servers:
            from es_server import start_server

            servers.append(start_server("noida", tmp_path_factory.mktemp("noida")))
        return servers[0].url

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def transcripts(tmp_path_factory: pytest.TempPathFactory, es_url) -> dict[str, Transcript]:  # noqa: ANN001
    """One sandboxed transcript per document, created on first use."""

    class Lazy(dict):
        def __missing__(self, doc: str) -> Transcript:
            examples = [ex for ex in EXAMPLES if ex.doc == doc]
            needs_es = any(ES_ADDRESS.search(ex.command) and not ex.skip for ex in examples)
            sandbox = tmp_path_factory.mktemp(Path(doc).stem)
            self[doc] = Transcript(doc, examples, sandbox, es_url() if needs_es else None)
            return self[doc]

    return Lazy()


def test_the_docs_have_examples() -> None:
    """The collector finds the README's commands (an extraction bug must not silently pass everything)."""
    readme = [ex for ex in EXAMPLES if ex.doc == "README.md" and ex.is_test]
    assert len(readme) >= 25, [ex.command for ex in readme]
    assert readme[0].command.endswith("soc demo"), readme[0]


@pytest.mark.parametrize("example", [_param(ex) for ex in EXAMPLES if ex.is_test])
def test_example(example: Example, transcripts: dict[str, Transcript]) -> None:
    """The command exits as the doc says and prints what the doc shows."""
    result = transcripts[example.doc].run_to(example)
    where = f"{example.id}: `{example.command}`"
    assert result.code in example.exits, f"{where} exited {result.code}, expected {example.exits}:\n{result.output}"
    missing = matches(example.expected, result.output)
    assert missing is None, f"{where}: output lacks {missing!r}:\n{result.output}"


def test_the_collector_reads_markers_chains_and_expected_output(tmp_path: Path) -> None:
    """A made-up document: what runs, what is expected, what is skipped (the conventions of transcript.py)."""
    doc = tmp_path / "made-up.md"
    doc.write_text("""\
```bash
python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/soc demo
docker compose up -d
export SOC_STORE=sqlite:x.db
soc store init && soc store status   # two soc commands, one example
# doc-test: skip (needs a mounted image)
soc compliance scan --root /mnt/image
soc logs ingest x.json --format ndjson --follow  # doc-test: stop after 2 s
```
```console
$ soc events search 'a:b' \\
    --count   # doc-test: exit 1
3
$ soc rules list
files 15: … unsupported 0
```
```yaml
soc: not a command
```
""")
    examples = extract(doc)
    assert [(ex.line, ex.command.split("  #")[0].strip(), ex.is_test) for ex in examples] == [
        (2, ".venv/bin/soc demo", True),
        (4, "export SOC_STORE=sqlite:x.db", False),
        (5, "soc store init && soc store status", True),
        (7, "soc compliance scan --root /mnt/image", True),
        (8, "soc logs ingest x.json --format ndjson --follow", True),
        (11, "soc events search 'a:b' --count", True),
        (14, "soc rules list", True),
    ]
    assert examples[3].skip == "needs a mounted image" and examples[4].stop_after == 2.0
    assert examples[5].exits == (1,) and examples[5].expected == ["3"]
    assert examples[6].expected == ["files 15: … unsupported 0"] and examples[6].key == "soc rules list"
    assert matches(examples[6].expected, "files 15:  loaded 21 (correlations 6),\n unsupported 0") is None
    assert matches(examples[6].expected, "unsupported 0 files 15:") == "files 15: … unsupported 0"
    doc.write_text("```bash\nsoc demo  # doc-test: exits 0\n```\n")
    with pytest.raises(ValueError, match=r"made-up.md:2: unknown doc-test marker"):
        extract(doc)
