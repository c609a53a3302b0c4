"""The scale-out store: an Elasticsearch cluster (official `elasticsearch` client).

Layout for namespace `ns` (URI query `?namespace=ns`, default `default`):

- `logs-soc.events-<ns>`: events, a data stream (ILM policy `soc-events-<ns>`: rollover, delete after `retention`);
- `soc-alerts-<ns>`: alerts, `_id = soc.alert.uuid`;
- `soc-audit-<ns>`: the hash-chained audit log, `_id = seq`, and `soc-meta-<ns>`: its head.

All come from composable index templates that `init()` installs. Free text searches `soc.search_text`, a field
holding the same string values the SQLite store indexes, analysed into runs of letters/digits, lower-cased;
it is indexed but not kept in `_source`. See docs/elasticsearch.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse, urlunparse

import elasticsearch
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, ConflictError, Elasticsearch, NotFoundError, helpers

from correlator.alerts import keep_workflow
from correlator.audit import GENESIS, Anchors, current_actor
from correlator.events import dumps_event, flatten, nest, to_utc_iso
from correlator.query import Cidr, Clause, Clearance, Prefix, Query, Range, Term, Text, Wildcard, searchable_text
from correlator.store.base import Store, StoreError, StoreRejected, StoreUnavailable
from correlator.store.sqlite import ip_bytes

SCHEMA_VERSION = 3  # 2: a lower-cased `.lc` keyword sub-field on every field (case-insensitive hunting);
# 3: records' kind and id indexed in the meta index (paged, sorted record reads)
APPLICATION = "soc"
TEXT_FIELD = "soc.search_text"
URI_PARAMS = {"namespace", "retention", "timeout", "ca_certs", "verify_certs"}
_DURATION = re.compile(r"^\d+[dhms]$")
_RETRY_STATUS = (429, 502, 503, 504)  # the transport re-sends other requests on these
BULK_RETRY_STATUS = (429, 500, 502, 503, 504)  # bulk requests and items: re-sent with backoff

# Explicit ECS mappings. Strings not listed are `keyword` (exact match, aggregations); the only analysed
# fields are the ECS free-text ones below and the soc search field. Ports, sizes and counters are numeric.
IP_FIELDS = (
    "source.ip", "destination.ip", "client.ip", "server.ip", "host.ip", "observer.ip", "related.ip",
    "source.nat.ip", "destination.nat.ip", "client.nat.ip", "server.nat.ip", "dns.resolved_ip",
    "threat.indicator.ip",
)
LONG_FIELDS = (
    "source.port", "destination.port", "client.port", "server.port", "source.nat.port", "destination.nat.port",
    "source.bytes", "destination.bytes", "source.packets", "destination.packets", "network.bytes",
    "network.packets", "network.iana_number", "event.duration", "event.sequence", "event.severity",
    "http.response.status_code", "http.request.bytes", "http.response.bytes", "process.pid", "file.size",
    "gov.label.rank",
)
FLOAT_FIELDS = ("event.risk_score", "soc.alert.risk_score")
DATE_FIELDS = ("event.ingested", "event.created", "event.start", "event.end")
TEXT_FIELDS = ("message", "error.message")  # analysed (standard) for hunting, `.keyword` for exact queries
KEYWORD_WITH_TEXT = ("url.original", "user_agent.original", "process.command_line", "file.path")

WORDS_ANALYSIS = {
    "tokenizer": {"soc_words": {"type": "pattern", "pattern": r"[^\p{L}\p{N}]+"}},
    "analyzer": {"soc_words": {"type": "custom", "tokenizer": "soc_words", "filter": ["lowercase"]}},
    "normalizer": {"soc_lowercase": {"type": "custom", "filter": ["lowercase"]}},
}
# Every field (whatever its type) also indexes its value as text, lower-cased, in `<field>.lc`: Sigma's
# case-insensitive matching and keyword search for the hunt (correlator.hunt); the field itself stays exact.
LC_FIELD = {"lc": {"type": "keyword", "normalizer": "soc_lowercase", "ignore_above": 8191}}


def _properties(fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Nest `{"a.b": mapping}` into ES `properties` objects."""
    root: dict[str, Any] = {}
    for name, mapping in fields.items():
        node = root
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {"properties": {}})["properties"]
        node[leaf] = mapping
    return root


def ecs_mappings() -> dict[str, Any]:
    """The mappings shared by events and alerts."""
    keyword = {"type": "keyword", "ignore_above": 1024, "fields": LC_FIELD}

    def lc(mapping: dict[str, Any]) -> dict[str, Any]:
        return mapping | {"fields": mapping.get("fields", {}) | LC_FIELD}

    fields: dict[str, dict[str, Any]] = {
        "@timestamp": lc({"type": "date_nanos"}),  # microseconds kept: --since/--until are exact, like SQLite
        "event.id": lc({"type": "keyword"}),
        TEXT_FIELD: {"type": "text", "analyzer": "soc_words", "norms": False, "index_options": "docs"},
        **{f: lc({"type": "ip"}) for f in IP_FIELDS},
        **{f: lc({"type": "long"}) for f in LONG_FIELDS},
        **{f: lc({"type": "float"}) for f in FLOAT_FIELDS},
        **{f: lc({"type": "date"}) for f in DATE_FIELDS},
        **{f: lc({"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 8191}}})
           for f in TEXT_FIELDS},
        **{f: lc(keyword | {"fields": {"text": {"type": "text"}}}) for f in KEYWORD_WITH_TEXT},
        "soc.alert.rule.threat": {"type": "object", "enabled": False},
    }
    return {
        "date_detection": False,
        "numeric_detection": False,
        "_source": {"excludes": [TEXT_FIELD]},
        "dynamic_templates": [
            {"ip_fields": {"path_match": "*.ip", "mapping": lc({"type": "ip"})}},
            {"port_fields": {"path_match": "*.port", "mapping": lc({"type": "long"})}},
            {"strings_as_keyword": {"match_mapping_type": "string", "mapping": keyword}},
            {"longs": {"match_mapping_type": "long", "mapping": lc({"type": "long"})}},
            {"doubles": {"match_mapping_type": "double", "mapping": lc({"type": "double"})}},
            {"booleans": {"match_mapping_type": "boolean", "mapping": lc({"type": "boolean"})}},
        ],
        "properties": _properties(fields),
    }


AUDIT_MAPPINGS = {
    "dynamic": "strict",
    "properties": {
        "seq": {"type": "long"}, "ts": {"type": "keyword"}, "actor": {"type": "keyword"},
        "action": {"type": "keyword"}, "details": {"type": "object", "enabled": False},
        "prev_hash": {"type": "keyword"}, "hash": {"type": "keyword"},
    },
}
META_MAPPINGS = {"dynamic": False, "properties": {"kind": {"type": "keyword"}, "id": {"type": "keyword"}}}
RECORD_PAGE = 1000  # records read per search


def is_ip_field(field: str) -> bool:
    """True for fields mapped as `ip` (the ECS list, and any `*.ip` by dynamic template)."""
    return field in IP_FIELDS or field.endswith(".ip")


def _unsupported(exc: ApiError) -> bool:
    """The server does not implement an API (an ES-compatible server without ILM or data streams)."""
    text = str(exc)
    return exc.status_code in (400, 404, 405, 501) and (
        "no handler found" in text or "unsupported_operation" in text or "not supported" in text
    )


class ElasticStore(Store):
    """Events, alerts and the audit log in an Elasticsearch cluster."""

    hunt_language = "lucene"
    PAGE = 5000
    RETRIES = 6  # times a bulk request or item answered 429/5xx is re-sent
    BACKOFF = 0.5  # seconds before the first re-send, doubled each time, at most MAX_BACKOFF
    MAX_BACKOFF = 10.0

    def __init__(self, uri: str, **client_options: Any) -> None:
        """Parse `uri` (http(s)://[user:pass@]host:port[/path][?namespace=&retention=&timeout=&ca_certs=
        &verify_certs=]); connects lazily. `client_options` go to `Elasticsearch(...)`. API key: $SOC_ES_API_KEY."""
        parsed = urlparse(uri)
        if not parsed.hostname or parsed.scheme not in ("http", "https"):
            raise StoreError(f"store URI {uri!r}: expected http(s)://host:port")
        # Shown in messages and used to key the spool: never the password.
        self.uri = uri.replace(f":{parsed.password}@", ":***@", 1) if parsed.password else uri
        params = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        if unknown := set(params) - URI_PARAMS:
            raise StoreError(f"store URI {uri!r}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(URI_PARAMS))}")
        self.namespace = params.get("namespace", "default")
        if not re.fullmatch(r"[a-z0-9_]+", self.namespace):
            raise StoreError(f"store URI {uri!r}: namespace must be lower-case letters, digits or _")
        self.retention = params.get("retention", "90d")
        if not _DURATION.match(self.retention):
            raise StoreError(f"store URI {uri!r}: retention {self.retention!r} is not a duration like 90d")
        try:
            timeout = float(params.get("timeout", "30"))
        except ValueError:
            raise StoreError(f"store URI {uri!r}: timeout must be seconds") from None
        options: dict[str, Any] = {
            "request_timeout": timeout, "max_retries": 2, "retry_on_timeout": True, "retry_on_status": _RETRY_STATUS,
        }
        if "ca_certs" in params:
            options["ca_certs"] = params["ca_certs"]
        if params.get("verify_certs", "").lower() in ("0", "false", "no"):
            options["verify_certs"] = False
        if api_key := os.environ.get("SOC_ES_API_KEY"):
            options["api_key"] = api_key
        if parsed.username:
            options["basic_auth"] = (parsed.username, parsed.password or "")
        netloc = parsed.hostname + (f":{parsed.port}" if parsed.port else "")
        if ":" in parsed.hostname:
            netloc = f"[{parsed.hostname}]" + (f":{parsed.port}" if parsed.port else "")
        self.url = urlunparse((parsed.scheme, netloc, parsed.path.rstrip("/"), "", "", ""))
        self.es = Elasticsearch(self.url, **(options | client_options))
        self._bulk_client = self.es.options(retry_on_status=())  # streaming_bulk does those retries, with backoff
        ns = self.namespace
        self.events_index = f"logs-soc.events-{ns}"
        self.alerts_index = f"soc-alerts-{ns}"
        self.audit_index = f"soc-audit-{ns}"
        self.meta_index = f"soc-meta-{ns}"
        self.incidents_index = f"soc-incidents-{ns}"
        self.policy = f"soc-events-{ns}"
        # Writes become searchable at the cluster's next refresh; whoever wrote refreshes once when done (close(),
        # or when the store is collected or the process exits), so the next command sees them.
        self._written = {"dirty": False}
        self._finalizer = weakref.finalize(self, _finish, self.es, f"{self.events_index},{self.alerts_index}",
                                           self._written)

    # -- errors ----------------------------------------------------------------------------------------------------

    @contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Turn client errors into StoreUnavailable (unreachable, overloaded) or StoreError (refused)."""
        try:
            yield
        except (TransportConnectionError, ConnectionTimeout) as exc:
            raise StoreUnavailable(f"{self.url}: {what}: cannot reach Elasticsearch ({exc.message})") from None
        except ApiError as exc:
            if exc.status_code in _RETRY_STATUS or exc.status_code >= 500:
                raise StoreUnavailable(f"{self.url}: {what}: cluster answered {exc.status_code} ({exc})") from None
            raise StoreError(f"{self.url}: {what}: {exc.status_code} {exc}") from None

    # -- schema ----------------------------------------------------------------------------------------------------

    def _template_meta(self) -> dict[str, Any] | None:
        try:
            found = self.es.indices.get_index_template(name=self.policy)["index_templates"]
        except NotFoundError:
            return None
        return found[0]["index_template"].get("_meta", {}) if found else None

    def init(self) -> None:
        """Install ILM policy, templates, the events data stream and the alerts/audit indices (idempotent)."""
        with self._calls("init"):
            meta = self._template_meta()
            if meta is not None:
                if meta.get("application") != APPLICATION:
                    raise StoreError(f"{self.url}: template {self.policy} exists but is not soc's; nothing written")
                if int(meta.get("schema_version", 0)) > SCHEMA_VERSION:
                    raise StoreError(f"{self.url}: schema version {meta['schema_version']} is newer than this soc "
                                     f"supports ({SCHEMA_VERSION}); upgrade soc. Nothing written.")
                if meta == self._meta() and self._indices_exist():
                    return
            self._install()

    def _meta(self) -> dict[str, Any]:
        return {"application": APPLICATION, "schema_version": SCHEMA_VERSION, "retention": self.retention}

    def _indices_exist(self) -> bool:
        names = (self.events_index, self.alerts_index, self.audit_index, self.meta_index, self.incidents_index)
        return all(self.es.indices.exists(index=n) for n in names)

    def _supports_ilm(self) -> bool:
        try:
            self.es.ilm.get_status()
        except ApiError as exc:
            if _unsupported(exc):
                return False
            raise
        return True

    def _install(self) -> None:
        es, ns, meta = self.es, self.namespace, self._meta()
        settings: dict[str, Any] = {"analysis": WORDS_ANALYSIS, "index": {"mapping": {"ignore_malformed": True}}}
        ilm = self._supports_ilm()
        if ilm:
            es.ilm.put_lifecycle(name=self.policy, policy={
                "_meta": meta,
                "phases": {
                    "hot": {"actions": {"rollover": {"max_age": "1d", "max_primary_shard_size": "50gb"}}},
                    "delete": {"min_age": self.retention, "actions": {"delete": {}}},
                },
            })
        es.cluster.put_component_template(name=f"soc-ecs-{ns}", version=SCHEMA_VERSION, meta=meta,
                                          template={"settings": settings, "mappings": ecs_mappings()})
        # Standard index mode: Elasticsearch 9 would otherwise make `logs-*-*` data streams logsdb (synthetic
        # _source, which drops the `_source.excludes` the free-text field relies on).
        opensearch = self.es.info()["version"].get("distribution") == "opensearch"  # no such setting there
        events_settings: dict[str, Any] = {"index": {} if opensearch else {"mode": "standard"}}
        if ilm:
            events_settings["index"]["lifecycle"] = {"name": self.policy}

        def events_template(data_stream: bool) -> None:
            es.indices.put_index_template(
                name=self.policy, index_patterns=[self.events_index], composed_of=[f"soc-ecs-{ns}"], priority=500,
                version=SCHEMA_VERSION, meta=meta, template={"settings": events_settings},
                **({"data_stream": {}} if data_stream else {}),
            )

        events_template(data_stream=True)
        for name, index, mappings in (
            (f"soc-alerts-{ns}", self.alerts_index, None),
            (f"soc-audit-{ns}", self.audit_index, AUDIT_MAPPINGS),
            (f"soc-meta-{ns}", self.meta_index, META_MAPPINGS),
            (f"soc-incidents-{ns}", self.incidents_index, None),
        ):
            es.indices.put_index_template(
                name=name, index_patterns=[index], priority=500, version=SCHEMA_VERSION, meta=meta,
                composed_of=[] if mappings else [f"soc-ecs-{ns}"],
                template={"mappings": mappings} if mappings else {},
            )
        if not es.indices.exists(index=self.events_index):
            try:
                es.indices.create_data_stream(name=self.events_index)
            except ApiError as exc:
                if _unsupported(exc):  # a server without data streams (ES-compatible services): a plain index
                    events_template(data_stream=False)
                    es.indices.create(index=self.events_index)
                elif "resource_already_exists" not in str(exc):  # (another soc just created it)
                    raise
        for index in (self.alerts_index, self.audit_index, self.meta_index, self.incidents_index):
            if not es.indices.exists(index=index):
                es.options(ignore_status=400).indices.create(index=index)  # 400: created concurrently
        self._index_records()

    def _index_records(self) -> None:
        """Schema 3: a meta index made before it maps `kind` and `id`, and re-indexes its records so queries find
        them (before schema 3 one search read every record, so one search of 10,000 holds them all)."""
        es = self.es
        mapping = next(iter(es.indices.get_mapping(index=self.meta_index).values()))["mappings"]
        if all(f in (mapping.get("properties") or {}) for f in META_MAPPINGS["properties"]):
            return
        es.indices.put_mapping(index=self.meta_index, properties=META_MAPPINGS["properties"])
        for hit in es.search(index=self.meta_index, query={"match_all": {}}, size=10_000)["hits"]["hits"]:
            if "kind" in hit["_source"]:
                es.index(index=self.meta_index, id=hit["_id"], document=hit["_source"])
        es.indices.refresh(index=self.meta_index)

    # -- writing ---------------------------------------------------------------------------------------------------

    def _source(self, flat: dict[str, Any]) -> dict[str, Any]:
        return nest({**flat, TEXT_FIELD: searchable_text(flat)})

    def _actions(self, docs: Sequence[dict[str, Any]], op: str, index: str, key: str,
                 refused: list[str]) -> list[dict[str, Any]]:
        """Bulk actions whose `_source` is strict JSON text (the client sends it as is); a document that cannot be
        encoded (NaN, Infinity, lone surrogate) is named in `refused` instead."""
        actions = []
        for doc in docs:
            try:
                source = dumps_event(self._source(doc))
            except ValueError as exc:
                refused.append(f"_id {doc.get(key)}: {exc}")
                continue
            actions.append({"_op_type": op, "_index": index, "_id": doc[key], "_source": source})
        return actions

    def write_events(self, events: Sequence[dict[str, Any]]) -> int:
        """Bulk-create events with `_id = event.id`; a 409 (already stored) counts as a duplicate."""
        refused: list[str] = []
        return self._bulk(self._actions(events, "create", self.events_index, "event.id", refused), "write events",
                          refused)

    def write_alerts(self, alerts: Sequence[dict[str, Any]]) -> None:
        """Index alerts by uuid, keeping a stored alert's workflow fields (correlator.alerts.keep_workflow): each is
        merged with the stored version and written only if that version is still current (`if_seq_no`); one that
        changed meanwhile (an analyst's action) is merged again."""
        refused: list[str] = []
        pending = {a["soc.alert.uuid"]: a for a in alerts}
        for _ in range(20):
            with self._calls("write alerts"):
                found = self.es.mget(index=self.alerts_index, ids=list(pending))["docs"] if pending else []
            now = to_utc_iso(datetime.now(UTC))
            merged, cas = [], {}
            for got in found:
                uuid = got["_id"]
                old = self._flat(got["_source"]) if got.get("found") else None
                merged.append(keep_workflow(dict(pending[uuid]), old, now))
                cas[uuid] = ({"if_seq_no": got["_seq_no"], "if_primary_term": got["_primary_term"]} if old is not None
                             else None)
            actions = self._actions(merged, "index", self.alerts_index, "soc.alert.uuid", refused)
            for act in actions:
                if cas[act["_id"]] is None:
                    act["_op_type"] = "create"
                else:
                    act |= cas[act["_id"]]
            conflicts: list[str] = []
            self._bulk(actions, "write alerts", refused, conflicts)
            refused = []
            pending = {u: pending[u] for u in conflicts}
            if not pending:
                return
        raise StoreError(f"{self.url}: write alerts: {len(pending)} alerts kept changing under the writer")

    def _bulk(self, actions: list[dict[str, Any]], what: str, refused_before: list[str] | None = None,
              conflicts: list[str] | None = None) -> int:
        """Send actions with `helpers.streaming_bulk`, which re-sends requests and items answered 429/5xx with
        exponential backoff; return how many documents were created.

        Raises StoreUnavailable when the cluster cannot be reached or still refuses items after the retries (the
        caller spools the batch; re-sending is idempotent), StoreRejected naming each document refused outright
        (by the cluster, or already in `refused_before`).
        """
        created, refused, rejected = 0, 0, list(refused_before or [])
        total = len(actions) + len(rejected)
        with self._calls(what):
            for ok, item in helpers.streaming_bulk(
                self._bulk_client, actions, raise_on_error=False, chunk_size=1000,
                max_retries=self.RETRIES, initial_backoff=self.BACKOFF, max_backoff=self.MAX_BACKOFF,
                retry_on_status=BULK_RETRY_STATUS,
            ):
                info = next(iter(item.values()))
                status = info.get("status", 0)
                if ok:
                    created += info.get("result") == "created"
                elif status == 409:
                    if conflicts is not None:  # compare-and-set lost: the caller merges again
                        conflicts.append(info.get("_id"))
                    continue  # already stored: a duplicate, not an error
                elif status in BULK_RETRY_STATUS:
                    refused += 1
                else:
                    err = info.get("error")
                    why = f"{err.get('type')}: {err.get('reason')}" if isinstance(err, dict) else str(err)
                    rejected.append(f"_id {info.get('_id')}: {status} {why}")
        self._written["dirty"] = True
        if refused:
            raise StoreUnavailable(f"{self.url}: {what}: {refused} documents still refused (429/5xx) after "
                                   f"{self.RETRIES} retries")
        if rejected:
            raise StoreRejected(f"{self.url}: {what}: {len(rejected)} of {total} documents rejected "
                                f"({total - len(rejected)} stored): " + "; ".join(rejected[:20]),
                                created, rejected)
        return created

    def update_alert(self, uuid: str, fields: dict[str, Any]) -> None:
        """Merge `fields` into the alert and re-index it (compare-and-set on its sequence number)."""
        if self.modify_alert(uuid, lambda doc: doc | fields) is None:
            raise StoreError(f"no alert with id {uuid}")

    def modify_alert(self, uuid: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
        """Read, change, re-index with compare-and-set on the sequence number; a conflict re-reads and re-applies."""
        with self._calls("modify alert"):
            for attempt in range(50):
                try:
                    got = self.es.get(index=self.alerts_index, id=uuid)
                except NotFoundError:
                    return None
                doc = change(self._flat(got["_source"]))
                try:
                    self.es.index(index=self.alerts_index, id=uuid, document=dumps_event(self._source(doc)),
                                  refresh=True, if_seq_no=got["_seq_no"], if_primary_term=got["_primary_term"])
                    return doc
                except ConflictError:
                    time.sleep(0.005 * attempt)  # changed under us: apply the change again to the new version
        raise StoreError(f"alert {uuid}: too many concurrent updates")

    def put_record(self, kind: str, record_id: str, doc: dict[str, Any]) -> None:
        """Kept in the meta index (`_id` = kind:id), written with refresh so the next read sees it."""
        with self._calls(f"write {kind}"):
            self.es.index(index=self.meta_index, id=f"{kind}:{record_id}",
                          document={"kind": kind, "id": record_id, "doc": doc}, refresh=True)

    def records(self, kind: str, limit: int | None = None, descending: bool = False) -> list[dict[str, Any]]:
        """A term query on `kind` sorted on `id` (both keywords in the meta index, schema 3), a page of at most
        RECORD_PAGE at a time with search_after: past the 10,000 a single search returns."""
        out: list[dict[str, Any]] = []
        after: list[Any] | None = None
        with self._calls(f"read {kind}"):
            while limit is None or len(out) < limit:
                size = RECORD_PAGE if limit is None else min(RECORD_PAGE, limit - len(out))
                hits = self.es.search(index=self.meta_index, query={"term": {"kind": kind}}, size=size,
                                      sort=[{"id": {"order": "desc" if descending else "asc"}}],
                                      **({"search_after": after} if after else {}))["hits"]["hits"]
                out += [h["_source"]["doc"] for h in hits]
                if len(hits) < size:
                    break
                after = hits[-1]["sort"]
        return out

    def get_record(self, kind: str, record_id: str) -> dict[str, Any] | None:
        with self._calls(f"read {kind}"):
            try:
                return self.es.get(index=self.meta_index, id=f"{kind}:{record_id}")["_source"]["doc"]
            except NotFoundError:
                return None

    def modify_record(self, kind: str, record_id: str,
                      change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
        """Read, change, re-index with compare-and-set on the sequence number; a conflict re-reads and re-applies."""
        with self._calls(f"modify {kind}"):
            for attempt in range(50):
                try:
                    got = self.es.get(index=self.meta_index, id=f"{kind}:{record_id}")
                except NotFoundError:
                    return None
                doc = change(got["_source"]["doc"])
                try:
                    self.es.index(index=self.meta_index, id=f"{kind}:{record_id}",
                                  document={"kind": kind, "id": record_id, "doc": doc}, refresh=True,
                                  if_seq_no=got["_seq_no"], if_primary_term=got["_primary_term"])
                    return doc
                except ConflictError:
                    time.sleep(0.005 * attempt)
        raise StoreError(f"{kind} {record_id}: too many concurrent updates")

    # -- incidents (`_id` = the number; every write refreshes, so the next read sees it) ----------------------

    def create_incident(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Create `_id = n` from the count of incidents + 1; a conflict (another writer took n) tries n + 1."""
        with self._calls("create incident"):
            number = self.es.count(index=self.incidents_index)["count"] + 1
            for _ in range(100):
                new = doc | {"soc.incident.id": number}
                try:
                    self.es.create(index=self.incidents_index, id=str(number), document=dumps_event(self._source(new)),
                                   refresh=True)
                    return new
                except ConflictError:
                    number += 1
        raise StoreError(f"{self.url}: create incident: too many concurrent creations")

    def get_incident(self, number: int) -> dict[str, Any] | None:
        with self._calls("get incident"):
            try:
                return self._flat(self.es.get(index=self.incidents_index, id=str(number))["_source"])
            except NotFoundError:
                return None

    def update_incident(self, number: int, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Read, change, re-index with compare-and-set on the sequence number; a conflict re-reads and re-applies."""
        with self._calls("update incident"):
            for _ in range(20):
                try:
                    got = self.es.get(index=self.incidents_index, id=str(number))
                except NotFoundError:
                    raise StoreError(f"no incident {number}") from None
                doc = change(self._flat(got["_source"])) | {"soc.incident.id": number}
                try:
                    self.es.index(index=self.incidents_index, id=str(number), document=dumps_event(self._source(doc)),
                                  refresh=True, if_seq_no=got["_seq_no"], if_primary_term=got["_primary_term"])
                    return doc
                except ConflictError:
                    continue
        raise StoreError(f"incident {number}: too many concurrent updates")

    def search_incidents(self, q: Query, limit: int = 100) -> list[dict[str, Any]]:
        with self._calls("search incidents"):
            return self._search(self.incidents_index, self.translate(q), INCIDENT_SORT, limit)

    def refresh(self) -> None:
        """Make everything written so far searchable (ES is near-real-time; `close()` does this too)."""
        with self._calls("refresh"):
            self.es.indices.refresh(index=f"{self.events_index},{self.alerts_index}")
        self._written["dirty"] = False

    # -- reading ---------------------------------------------------------------------------------------------------

    @staticmethod
    def _flat(source: dict[str, Any]) -> dict[str, Any]:
        flat = flatten(source)
        flat.pop(TEXT_FIELD, None)  # excluded from _source by the mapping; some servers keep it anyway
        if flat.get("soc") == {}:  # what is left of {"soc": {"search_text": …}} after the exclusion
            del flat["soc"]
        return flat

    def _search(self, index: str, query: dict, sort: list, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` documents in `sort` order, paging with search_after."""
        out: list[dict[str, Any]] = []
        after = None
        while len(out) < limit:
            size = min(limit - len(out), self.PAGE)
            page = {"search_after": after} if after else {}
            hits = self.es.search(index=index, query=query, sort=sort, size=size, track_total_hits=False,
                                  **page)["hits"]["hits"]
            out.extend(self._flat(h["_source"]) for h in hits)
            if len(hits) < size:
                break
            after = hits[-1]["sort"]
        return out

    def search_events(self, q: Query, limit: int = 100) -> list[dict[str, Any]]:
        with self._calls("search events"):
            return self._search(self.events_index, self.translate(q), EVENT_SORT, limit)

    def count_events(self, q: Query) -> int:
        with self._calls("count events"):
            return self.es.count(index=self.events_index, query=self.translate(q))["count"]

    def search_alerts(self, q: Query, limit: int = 100) -> list[dict[str, Any]]:
        with self._calls("search alerts"):
            return self._search(self.alerts_index, self.translate(q), ALERT_SORT, limit)

    def count_alerts(self, q: Query) -> int:
        with self._calls("count alerts"):
            return self.es.count(index=self.alerts_index, query=self.translate(q))["count"]

    def get_alert(self, uuid: str) -> dict[str, Any] | None:
        with self._calls("get alert"):
            try:
                return self._flat(self.es.get(index=self.alerts_index, id=uuid)["_source"])
            except NotFoundError:
                return None

    def hunt(self, query: str, since: datetime | None, until: datetime | None, limit: int = 1000,
             clauses: tuple[Clause, ...] = ()) -> list[dict]:
        """Events matching a Lucene query_string (bare words search the free-text field), newest first."""
        must = [{"query_string": {"query": query, "default_field": TEXT_FIELD}}]
        dsl = {"bool": {"filter": [*must, *_time_filter(Query((), since, until)), *map(_clause_dsl, clauses)]}}
        with self._calls(f"hunt {query!r}"):
            return self._search(self.events_index, dsl, EVENT_SORT, limit)

    @staticmethod
    def translate(q: Query) -> dict[str, Any]:
        """The Query DSL for `q` (same semantics as the SQLite store's SQL)."""
        filters = [*_time_filter(q), *(_clause_dsl(c) for c in q.clauses)]
        return {"bool": {"filter": filters}} if filters else {"match_all": {}}

    # -- audit -----------------------------------------------------------------------------------------------------

    def audit(self, action: str, details: dict[str, Any], actor: str | None = None) -> None:
        """Append an entry: create `_id = seq` (a conflict means another writer took it), then advance the head."""
        actor = actor or current_actor()
        with self._calls("audit"):
            for attempt in range(50):
                head = self._head()
                if type(head.get("seq")) is not int or not isinstance(head.get("hash"), str):
                    raise StoreError(f"{self.url}: audit: the head {self.meta_index}/audit_head is malformed; "
                                     "run `soc audit verify`")
                seq, prev = head["seq"] + 1, head["hash"]
                ts = to_utc_iso(datetime.now(UTC))
                digest = self.audit_chain.seal(head["hash"] if seq > 1 else None, prev, seq, ts, actor, action,
                                               details)
                entry = {"seq": seq, "ts": ts, "actor": actor, "action": action, "details": details,
                         "prev_hash": prev, "hash": digest}
                try:
                    self.es.create(index=self.audit_index, id=str(seq), document=entry, refresh=True)
                except ConflictError:
                    # seq is taken: another writer's, or ours from a run that died before moving the head
                    taken = self.es.get(index=self.audit_index, id=str(seq))["_source"]
                    self._advance_head(head, taken)
                    time.sleep(0.01 * attempt)
                    continue
                self._advance_head(head, entry)
                self.audit_chain.anchored(seq, digest)
                return
        raise StoreError(f"{self.url}: audit: could not append after 50 attempts (contention)")

    def _head(self) -> dict[str, Any]:
        try:
            got = self.es.get(index=self.meta_index, id="audit_head")
        except NotFoundError:
            return {"seq": 0, "hash": GENESIS, "_seq_no": None}
        return got["_source"] | {"_seq_no": got["_seq_no"], "_primary_term": got["_primary_term"]}

    def _advance_head(self, head: dict[str, Any], entry: dict[str, Any]) -> None:
        """Move the head from `head` to `entry` unless someone already moved it."""
        doc = {"seq": entry["seq"], "hash": entry["hash"]}
        cas = ({"op_type": "create"} if head["_seq_no"] is None
               else {"if_seq_no": head["_seq_no"], "if_primary_term": head["_primary_term"]})
        with suppress(ConflictError):
            self.es.index(index=self.meta_index, id="audit_head", document=doc, **cas)

    def audit_entries(self) -> list[dict[str, Any]]:
        """All audit entries in seq order (with their hashes)."""
        with self._calls("read audit log"):
            self.es.indices.refresh(index=self.audit_index)
            out, after = [], None
            while True:
                page = {"search_after": after} if after else {}
                hits = self.es.search(index=self.audit_index, sort=[{"seq": "asc"}], size=self.PAGE,
                                      query={"match_all": {}}, **page)["hits"]["hits"]
                out.extend(h["_source"] for h in hits)
                if len(hits) < self.PAGE:
                    return out
                after = hits[-1]["sort"]

    @property
    def audit_name(self) -> str:
        return f"{self.url}?namespace={self.namespace}"

    def audit_verify(self, anchors: Iterable[Anchors] = ()) -> list[str]:
        entries = self.audit_entries()
        with self._calls("read audit head"):
            head = self._head()
        have = f"{head.get('seq')}:{head.get('hash')}" if head["_seq_no"] is not None else None
        return self.audit_chain.verify(entries, have, anchors)

    # -- status ----------------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Cluster health and version, soc schema and layout, counts and the event time span."""
        with self._calls("status"):
            info = self.es.info()
            health = self.es.cluster.health()
            meta = self._template_meta()
            out: dict[str, Any] = {
                "backend": "elasticsearch",
                "uri": self.url,
                "cluster": info.get("cluster_name"),
                "cluster_status": health.get("status"),
                "nodes": health.get("number_of_nodes"),
                "server_version": info["version"].get("number"),
                "distribution": info["version"].get("distribution", "elasticsearch"),
                "client_version": elasticsearch.__versionstr__,
                "schema_version": meta.get("schema_version") if meta else None,
                "namespace": self.namespace,
                "retention": (meta or {}).get("retention"),
            }
            initialized = meta is not None and self._indices_exist()
            out["healthy"] = initialized and health.get("status") in ("green", "yellow")
            if not initialized:
                out["error"] = "not initialized: run `soc store init`"
                return out
            out |= self._layout()
            count = self.es.count
            out["events"] = count(index=self.events_index)["count"]
            out["alerts"] = count(index=self.alerts_index)["count"]
            out["audit_entries"] = count(index=self.audit_index)["count"]
            for key, order in (("first_event", "asc"), ("last_event", "desc")):
                hits = self.es.search(index=self.events_index, size=1, sort=[{"@timestamp": order}],
                                      source=["@timestamp"])["hits"]["hits"]
                out[key] = hits[0]["_source"]["@timestamp"] if hits else None
        return out

    def _layout(self) -> dict[str, Any]:
        """Whether events live in a data stream, its backing indices and ILM policy."""
        try:
            streams = self.es.indices.get_data_stream(name=self.events_index)["data_streams"]
        except ApiError:
            streams = []
        if not streams:
            return {"events_target": f"index {self.events_index}", "ilm_policy": None}
        ds = streams[0]
        return {
            "events_target": f"data stream {self.events_index}",
            "backing_indices": len(ds.get("indices", [])),
            "ilm_policy": ds.get("ilm_policy"),
        }

    def close(self) -> None:
        """Refresh what this store wrote (so the next command sees it) and close connections."""
        self._finalizer()


def _finish(es: Elasticsearch, indices: str, written: dict[str, bool]) -> None:
    if written["dirty"]:
        with suppress(Exception):  # unreachable or closing down: nothing more to do
            es.options(request_timeout=5, max_retries=0).indices.refresh(index=indices)
    es.close()


EVENT_SORT = [{"@timestamp": {"order": "desc"}}, {"event.id": {"order": "asc"}}]
INCIDENT_SORT = [{"soc.incident.id": {"order": "desc", "unmapped_type": "long"}}]
ALERT_SORT = [
    {"soc.alert.risk_score": {"order": "desc", "missing": "_last", "unmapped_type": "float"}},
    {"@timestamp": {"order": "desc"}},
    {"soc.alert.uuid": {"order": "asc", "unmapped_type": "keyword"}},
]


def _time_filter(q: Query) -> list[dict[str, Any]]:
    """since inclusive, until exclusive, at microsecond precision (`@timestamp` is date_nanos)."""
    bounds = {}
    if q.since:
        bounds["gte"] = to_utc_iso(q.since)
    if q.until:
        bounds["lt"] = to_utc_iso(q.until)
    return [{"range": {"@timestamp": bounds}}] if bounds else []


def _exact_field(field: str) -> str:
    """The field to match exact values against (analysed ECS text fields have a `.keyword` sub-field)."""
    return f"{field}.keyword" if field in TEXT_FIELDS else field


def _clause_dsl(c: Clause) -> dict[str, Any]:
    if isinstance(c, Term):
        if is_ip_field(c.field):
            if not isinstance(c.value, str) or ip_bytes(c.value) is None:
                return {"match_none": {}}  # not an address: nothing in an ip field can equal it (as SQLite)
            return {"term": {c.field: c.value}}
        values: list[Any] = [c.value]
        if isinstance(c.value, str) and ip_bytes(c.value):  # match an address in any spelling, as SQLite does
            canonical = str(ipaddress.ip_address(c.value.split("%", 1)[0]))
            if canonical != c.value:
                values.append(canonical)
        return {"terms": {_exact_field(c.field): values}}
    if isinstance(c, Prefix | Wildcard):
        kind = "prefix" if isinstance(c, Prefix) else "wildcard"
        if is_ip_field(c.field):
            raise StoreError(f"{c.field}: {kind} queries do not apply to IP fields; use a CIDR such as 10.0.0.0/8")
        if c.field in LONG_FIELDS or c.field in FLOAT_FIELDS or c.field.endswith(".port"):
            return {"match_none": {}}  # patterns match string values only (as SQLite); ES would answer 400
        if isinstance(c, Prefix):
            return {"prefix": {_exact_field(c.field): c.prefix}}
        pattern = c.pattern.replace("\\", "\\\\").replace("?", "\\?")  # `*` stays the wildcard
        return {"wildcard": {_exact_field(c.field): {"value": pattern}}}
    if isinstance(c, Cidr):
        if not is_ip_field(c.field):
            raise StoreError(f"{c.field}: CIDR queries need an ip-typed field in Elasticsearch "
                             f"({', '.join(IP_FIELDS[:4])}, …, or any *.ip field)")
        return {"term": {c.field: str(c.network)}}
    if isinstance(c, Range):
        bounds = {op: v for op, v in (("gte", c.gte), ("lte", c.lte), ("gt", c.gt), ("lt", c.lt)) if v is not None}
        return {"range": {c.field: bounds}}
    if isinstance(c, Text):
        return {"bool": {"filter": [{"term": {TEXT_FIELD: w}} for w in c.words]}}
    if isinstance(c, Clearance):  # unlabelled items are rank 0 (public)
        if c.max_rank < 0:
            return {"range": {"gov.label.rank": {"lte": c.max_rank}}}
        return {"bool": {"must_not": [{"range": {"gov.label.rank": {"gt": c.max_rank}}}]}}
    raise StoreError(f"unsupported query clause {c!r}")


__all__ = ["ElasticStore", "ecs_mappings", "is_ip_field", "SCHEMA_VERSION"]
