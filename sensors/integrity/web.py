"""Website defacement: a page's fingerprint (title, visible text, external scripts, linked domains) taken after
normalisation, stored keyed per URL, and compared with the page as served now.

Normalisation (BeautifulSoup over lxml): scripts, styles and templates leave the text (an inline script's
counters and tokens change on every load); the policy's dynamic regions (CSS selectors: news tickers, visitor
counters, dates) are removed before anything is read; whitespace is collapsed.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from bs4 import BeautifulSoup

from sensors.integrity.policy import WebPolicy

KIND = "integrity-web"
DATASET = "integrity.web"
MAX_TEXT = 200_000
_HIDDEN = ("script", "style", "noscript", "template")
_LINKS = (("a", "href"), ("iframe", "src"), ("frame", "src"), ("form", "action"), ("embed", "src"),
          ("object", "data"))


class FetchError(Exception):
    """A page could not be fetched; `str()` names the URL and the reason."""


@dataclass
class Page:
    url: str
    status: int
    title: str
    text: str  # visible text, one block per line
    scripts: list[str]  # external script URLs (other hosts), sorted
    domains: list[str]  # hosts that links and frames lead to (other hosts), sorted

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "").lower()

    def record(self, key: bytes, fetched: str) -> dict[str, Any]:
        doc = {"url": self.url, "status": self.status, "title": self.title, "text": self.text[:MAX_TEXT],
               "text_sha256": hashlib.sha256(self.text.encode()).hexdigest(), "scripts": self.scripts,
               "domains": self.domains, "fetched": fetched}
        doc["mac"] = mac(key, doc)
        return doc


def mac(key: bytes, doc: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in doc.items() if k != "mac"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def fetch(url: str, timeout: float = 10.0, session: requests.Session | None = None) -> tuple[int, str]:
    """(status, HTML) of a page; FetchError when it cannot be had."""
    try:
        resp = (session or requests).get(url, timeout=timeout, allow_redirects=True,
                                         headers={"User-Agent": "soc-integrity/1"})
    except requests.RequestException as exc:
        raise FetchError(f"{url}: {exc.__class__.__name__}: {exc}") from None
    if resp.status_code >= 400:
        raise FetchError(f"{url}: HTTP {resp.status_code}")
    return resp.status_code, resp.text


def normalize(url: str, status: int, html: str, policy: WebPolicy) -> Page:
    """The page's fingerprint after removing scripts' text and the policy's dynamic regions."""
    soup = BeautifulSoup(html, "lxml")
    for selector in policy.dynamic:
        for node in soup.select(selector):
            node.decompose()
    own = (urlsplit(url).hostname or "").lower()
    scripts = set()
    for node in soup.find_all("script", src=True):
        src = urljoin(url, str(node["src"]).strip())
        if (urlsplit(src).hostname or "").lower() not in ("", own):
            scripts.add(src)
    domains = set()
    for tag, attr in _LINKS:
        for node in soup.find_all(tag, attrs={attr: True}):
            host = (urlsplit(urljoin(url, str(node[attr]).strip())).hostname or "").lower()
            if host and host != own:
                domains.add(host)
    title = " ".join(soup.title.get_text(" ").split()) if soup.title else ""
    for node in soup.find_all(_HIDDEN):
        node.decompose()
    if soup.title:
        soup.title.decompose()
    blocks = (" ".join(line.split()) for line in soup.get_text("\n").splitlines())
    text = "\n".join(b for b in blocks if b)
    return Page(url, status, title, text, sorted(scripts), sorted(domains))


def _known(host: str, known: tuple[str, ...], own: str) -> bool:
    return host == own or any(host == k or host.endswith("." + k) for k in known)


def compare(old: dict[str, Any], new: Page, policy: WebPolicy) -> dict[str, Any]:
    """The findings (`soc.web.*` fields) of a page against its stored fingerprint; empty when nothing changed."""
    out: dict[str, Any] = {}
    findings = []
    if old.get("title", "") != new.title:
        findings.append("title")
        out |= {"soc.web.old.title": old.get("title", ""), "soc.web.new.title": new.title}
    if old.get("text_sha256") != hashlib.sha256(new.text.encode()).hexdigest():
        findings.append("text")
        a, b = str(old.get("text", "")).split("\n"), new.text.split("\n")
        delta = list(difflib.unified_diff(a, b, lineterm="", n=0))[2:]
        out["soc.web.text.removed"] = [d[1:] for d in delta if d.startswith("-")][:10]
        out["soc.web.text.added"] = [d[1:] for d in delta if d.startswith("+")][:10]
    scripts = [s for s in new.scripts if s not in set(old.get("scripts") or [])]
    if scripts:
        findings.append("script")
        out["soc.web.new_scripts"] = scripts
    seen = set(old.get("domains") or [])
    domains = [d for d in new.domains if d not in seen and not _known(d, policy.known_domains, new.host)]
    if domains:
        findings.append("domain")
        out["soc.web.new_domains"] = domains
    if findings:
        out["soc.web.findings"] = findings
    return out


def web_event(page: Page, findings: dict[str, Any], now: datetime, host: str,
              label: tuple[str, int, str] | None, tampered: bool = False) -> dict[str, Any]:
    """The ECS event of a changed page (or of its edited stored fingerprint)."""
    ev: dict[str, Any] = {
        "@timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "event.kind": "event", "event.category": ["web"],
        "event.type": ["change"], "event.action": "fingerprint-tampered" if tampered else "page-changed",
        "event.dataset": DATASET, "event.module": "integrity", "observer.name": host, "url.full": page.url,
        "url.domain": page.host, "url.path": urlsplit(page.url).path or "/",
        "http.response.status_code": page.status, **findings}
    if tampered:
        ev["soc.integrity.baseline.tampered"] = True
        ev["message"] = f"{page.url}: the stored fingerprint does not match its keyed hash"
    else:
        ev["message"] = f"{page.url}: {', '.join(findings.get('soc.web.findings', []))} changed"
    if label:
        ev |= {"soc.integrity.label.level": label[0], "soc.integrity.label.rank": label[1],
               "soc.integrity.label.ar": label[2]}
    return ev
