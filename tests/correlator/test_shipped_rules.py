"""soc's shipped rules: their positive/negative samples, real captures through the sensor, and SigmaHQ's network
rules running on soc sensor events through the pipelines."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from correlator.events import normalize
from correlator.sigma import SHIPPED_RULES
from correlator.sigma.detector import SigmaDetector, SigmaEngine
from correlator.sigma.loader import load_placeholders, rule_files
from correlator.sigma.testing import passes, regression_cases, run_rules
from soc_cli.main import app

RULE_FILES = rule_files([SHIPPED_RULES])


def _cases():
    out = []
    for f in RULE_FILES:
        docs = list(yaml.safe_load_all(f.read_text(encoding="utf-8")))
        tests_path = docs[0].get("regression_tests_path")
        out.extend(regression_cases(f, tests_path) if tests_path else [])
    return out


CASES = _cases()


def test_every_shipped_rule_file_has_positive_and_negative_samples() -> None:
    assert len(RULE_FILES) >= 12
    per_file = Counter(c.rule_file for c in CASES)
    assert set(per_file) == set(RULE_FILES)
    for f in RULE_FILES:
        expected = sorted(c.expected for c in CASES if c.rule_file == f)
        assert expected[0] == 0 and expected[-1] >= 1, f


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule_file.stem}-{c.events.stem}" for c in CASES])
def test_sample(case) -> None:
    results, failures = run_rules([case.rule_file], [case.events])
    assert failures == []
    n = sum(r.matches for r in results)
    assert passes(n, case.expected), (case.rule_file.name, case.name, n)
    if case.expected:  # positives fire exactly as many times as declared
        assert n == case.expected


def test_cli_runs_all_shipped_regression_cases() -> None:
    res = CliRunner().invoke(app, ["rules", "test", str(SHIPPED_RULES), "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(rows) == len(CASES) and all(r["passed"] for r in rows)


# --- real captures (independent descriptions in pcaps/MANIFEST.tsv) ------------------------------------------------
PCAP_EXPECT = {
    "zk_ssh-bruteforce.pcap": {"SSH Brute Force"},  # "SSH password guessing: many short SSH sessions"
    "zk_ftp-bruteforce.pcap": {"FTP Brute Force", "Cleartext Remote Access"},  # "20 failed logins in 37 s"
    "es_masscan-tcp-scan.pcap": {"Port Scan"},  # "masscan -p0-1000 TCP SYN scan of one host"
    # "DNS tunnel-like traffic … 81 distinct qnames up to 193 chars, TXT/NULL-style answers"
    "sv_dns-tunnel-longnames.pcap": {"DNS Tunnelling - Long", "DNS Tunnelling - High TXT"},
    "zk_icmp-5-pings.pcap": set(),  # ordinary pings: no ICMP tunnel
    "sv_icmpv4-ping.pcap": set(),
    "zk_wikipedia.pcap": set(),  # real browsing
    "sv_real-browsing-mix.pcap": set(),
}
IGNORED = ("DNS Query To An Unsanctioned Resolver",)  # the captures' resolvers are not on the sample list


@pytest.fixture(scope="module")
def shipped() -> SigmaEngine:
    return SigmaEngine.load([SHIPPED_RULES], "ecs", load_placeholders([SHIPPED_RULES]))


@pytest.mark.corpus
@pytest.mark.parametrize("pcap", sorted(PCAP_EXPECT))
def test_real_capture(corpus: Path, shipped: SigmaEngine, pcap: str) -> None:
    from sensors.capture import read_file
    from sensors.engine import Sensor

    events = [normalize(e) for e in Sensor("test").run(read_file(str(corpus / "pcaps" / pcap)))]
    assert events
    det = SigmaDetector(shipped)
    alerts = det.detect(events) + det.flush()
    names = {a["soc.alert.rule.name"] for a in alerts if a["soc.alert.rule.name"] not in IGNORED}
    fired = {p for p in PCAP_EXPECT[pcap] if any(n.startswith(p) for n in names)}
    assert fired == PCAP_EXPECT[pcap], names
    assert len(names) == len(PCAP_EXPECT[pcap]), names


# --- SigmaHQ's network rules on soc sensor events ------------------------------------------------------------------
def soc_event(dataset: str, **fields) -> dict:
    return {"@timestamp": "2026-05-01T10:00:00.000000Z", "event.kind": "event", "event.dataset": dataset,
            "source.ip": "10.0.0.5", "destination.ip": "93.184.216.34"} | fields


SIGMAHQ_NETWORK = [
    ("rules/network/dns/net_dns_wannacry_killswitch_domain.yml",
     soc_event("soc.dns", **{"dns.question.name": "IFFERFSODP9IFJAPOSDFJHGOSURIJFAEWRWERGWEA.com",
                             "dns.type": "query"})),
    ("rules/web/proxy_generic/proxy_hello_world_user_agent.yml",
     soc_event("soc.http", **{"user_agent.original": "Hello-World/1.0", "http.request.method": "GET",
                              "url.original": "/"})),
    ("rules/network/zeek/zeek_http_webdav_put_request.yml",
     soc_event("soc.http", **{"user_agent.original": "Microsoft-WebDAV-MiniRedir/10.0", "http.request.method": "PUT",
                              "url.original": "/x"})),
    ("rules/network/zeek/zeek_dns_torproxy.yml",
     soc_event("soc.dns", **{"dns.question.name": "abcdef.onion.to", "dns.type": "query"})),
]


@pytest.mark.corpus
@pytest.mark.parametrize(("rule", "event"), SIGMAHQ_NETWORK, ids=[Path(r).stem for r, _ in SIGMAHQ_NETWORK])
def test_sigmahq_network_rule_on_sensor_event(sigma_dir: Path, rule: str, event: dict) -> None:
    path = sigma_dir / "rules-tree" / rule
    eng = SigmaEngine.load([path], "ecs")
    assert eng.failures == [] and len(eng.infos) == 1
    assert eng.matcher.match(event) == [0]
    # routed by dataset: the same fields on a flow record, or a private WebDAV target, do not match
    assert eng.matcher.match(event | {"event.dataset": "soc.flow"}) == []
