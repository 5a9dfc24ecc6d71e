"""Ingestion management (``/inma``): ingestion sources, managed identities, ingestion definitions and their runs.

A run of a ``StaticCatalog`` definition is an ``IngestionStaticCatalog`` operation on the catalog's timeline: the
run reads the static catalog (``static_catalog.py``) in the background as soon as it is created, and when the
operation is due its items are written into the collection exactly as an ``AddItem`` operation writes them (asset
checks, managed-storage copies). A catalog on this emulator's own blob store (``/_blobs/...`` or an Azure blob
href whose blob the store holds) is read from the store; any other URL over HTTP(S). A registered ingestion source
whose ``containerUrl`` covers a URL lends its SAS token (or, for a managed identity, its access) to the read and to
the item assets. Deleting a definition is a ``DeleteIngestion`` operation; until it ends the definition shows
``status: Deleting``. Shapes and statuses follow Microsoft's recordings (docs/emulator-geocatalog.md, I02-I17).
State lives in memory (not under ``--data-dir``).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web

from gcw_emulators.geocatalog.catalog import Catalog, strip_sas
from gcw_emulators.geocatalog.errors import ApiError
from gcw_emulators.geocatalog.items import collection_not_found
from gcw_emulators.geocatalog.operations import Operation, rfc3339
from gcw_emulators.geocatalog.sas import parse_iso
from gcw_emulators.geocatalog.static_catalog import CatalogReadError, StaticCatalogReader
from gcw_emulators.geocatalog.validation import check_item
from worker.domain.secrets import redact

if TYPE_CHECKING:
    from gcw_emulators.geocatalog.app import GeoCatalogApp

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SOURCE_KINDS = ("SasToken", "BlobManagedIdentity")
IMPORT_TYPES = ("StaticCatalog", "StacGeoparquet")
RUN_TYPE, DELETE_TYPE = "IngestionStaticCatalog", "DeleteIngestion"
FETCH_TIMEOUT = 30.0  # seconds per document read over HTTP
RECHECK_SECONDS = 0.1  # a due run whose catalog is still being read looks again this much later
RUN_OPERATION_KEYS = ("id", "status", "statusHistory", "creationTime", "startTime", "finishTime")
ZERO_COUNTS = {"TotalFailedItems": "0", "TotalItems": "0", "TotalPendingItems": "0", "TotalSuccessfulItems": "0"}


@dataclass(frozen=True)
class ManagedIdentity:
    object_id: str
    resource_id: str


# the identity assigned to the emulated GeoCatalog (what GET .../managed-identities lists; I02)
EMULATOR_IDENTITY = ManagedIdentity(
    "6a1f0c52-8e35-4f0e-9c3e-0e5b1a7d2c41",
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/geocatalog-emulator/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/geocatalog-emulator-ingestion",
)


@dataclass
class Source:
    id: str
    kind: str
    created: float
    container_url: str
    sas_token: str | None = None  # never served back: the service answers with its expiration only (I02a)
    expiration: float | None = None
    object_id: str | None = None

    def covers(self, url: str) -> bool:
        base, target = urlsplit(self.container_url), urlsplit(url)
        prefix = base.path.rstrip("/") + "/"
        return base.netloc.lower() == target.netloc.lower() and target.path.startswith(prefix)

    def connection_info(self) -> dict[str, Any]:
        if self.kind == "SasToken":
            return {"containerUrl": self.container_url, "expiration": rfc3339(self.expiration or 0.0)}
        return {"containerUrl": self.container_url, "objectId": self.object_id}


@dataclass
class Definition:
    id: str
    collection_id: str
    created: float
    doc: dict[str, Any]  # importType, displayName, sourceCatalogUrl, stacGeoparquetUrl, skip/keep flags
    delete_op: str | None = None
    runs: dict[str, Run] = field(default_factory=dict)


@dataclass
class Run:
    id: str
    created: float
    operation_id: str
    source_catalog_url: str
    skip_existing_items: bool
    keep_original_assets: bool


def _bad(message: str, target: str) -> ApiError:
    return ApiError(400, "InvalidInputData", f"{target}: {message}", target=target)


def _http_url(value: Any, target: str) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        raise _bad("must be an absolute http(s) URL", target)
    return value


def _guid(value: Any, target: str) -> str:
    if not isinstance(value, str) or not GUID.match(value):
        raise _bad(f"must be a GUID, got {value!r}", target)
    return value.lower()


class Ingestions:
    """Sources, definitions and runs of one emulated GeoCatalog, guarded by the catalog's lock."""

    def __init__(self, catalog: Catalog, identities: tuple[ManagedIdentity, ...] = (EMULATOR_IDENTITY,)) -> None:
        self.catalog = catalog
        self.identities = identities
        self.sources: dict[str, Source] = {}
        self.definitions: dict[str, Definition] = {}
        self._fetched: dict[str, tuple[list[tuple[str, dict[str, Any]]], tuple[str, str] | None]] = {}
        self._fetching: set[str] = set()
        catalog.appliers[RUN_TYPE] = self._apply_run
        catalog.appliers[DELETE_TYPE] = self._apply_delete

    # ---------------------------------------------------------------- sources
    def _parse_source(self, body: Any, source_id: str | None) -> Source:
        if not isinstance(body, dict):
            raise _bad("an ingestion source must be a JSON object", "body")
        kind = body.get("kind")
        if kind not in SOURCE_KINDS:
            raise _bad(f"must be one of {', '.join(SOURCE_KINDS)}, got {kind!r}", "kind")
        if source_id is None:
            source_id = _guid(body["id"], "id") if body.get("id") is not None else str(uuid.uuid4())
        elif body.get("id") is not None and _guid(body["id"], "id") != source_id:
            raise _bad(f"body id {body['id']!r} does not match {source_id!r} in the path", "id")
        info = body.get("connectionInfo")
        if not isinstance(info, dict):
            raise _bad("is required (an object with containerUrl)", "connectionInfo")
        url = _http_url(info.get("containerUrl"), "connectionInfo.containerUrl").rstrip("/")
        source = Source(source_id, kind, self.catalog.clock(), url)
        if kind == "SasToken":
            token = info.get("sasToken")
            if not isinstance(token, str) or not token.strip():
                raise _bad("is required for a SasToken source", "connectionInfo.sasToken")
            fields = {k: v[0] for k, v in parse_qs(token.lstrip("?"), keep_blank_values=True).items()}
            for name in ("st", "se", "sig"):  # the service requires the start time too (I02a)
                if not fields.get(name):
                    raise _bad(f"the SAS token must carry '{name}'", "connectionInfo.sasToken")
            expiry = parse_iso(fields["se"])
            if expiry is None or parse_iso(fields["st"]) is None:
                raise _bad("'st' and 'se' must be ISO-8601 times", "connectionInfo.sasToken")
            source.sas_token, source.expiration = token.lstrip("?"), expiry
        else:
            object_id = _guid(info.get("objectId"), "connectionInfo.objectId")
            if object_id not in {i.object_id for i in self.identities}:
                known = ", ".join(i.object_id for i in self.identities)
                raise _bad(
                    f"{object_id} is not a managed identity of this GeoCatalog (GET "
                    f"/inma/ingestion-sources/managed-identities lists: {known})",
                    "connectionInfo.objectId",
                )
            source.object_id = object_id
        return source

    def _check_unique_container(self, source: Source) -> None:
        for other in self.sources.values():
            if other.id != source.id and other.container_url.lower() == source.container_url.lower():
                raise ApiError(
                    409,
                    "IngestionSourceAlreadyExists",
                    f"An ingestion source for container '{source.container_url}' already exists: {other.id}",
                    target="connectionInfo.containerUrl",
                )

    def create_source(self, body: Any) -> Source:
        with self.catalog._lock:
            source = self._parse_source(body, None)
            if source.id in self.sources:
                raise ApiError(
                    409, "IngestionSourceAlreadyExists", f"Ingestion source '{source.id}' already exists", "id"
                )
            self._check_unique_container(source)
            self.sources[source.id] = source
            return source

    def replace_source(self, source_id: str, body: Any) -> Source:
        source_id = _guid(source_id, "id")
        with self.catalog._lock:
            source = self._parse_source(body, source_id)
            existing = self.sources.get(source_id)
            if existing is not None:
                source.created = existing.created
            self._check_unique_container(source)
            self.sources[source_id] = source
            return source

    def get_source(self, source_id: str) -> Source:
        with self.catalog._lock:
            source = self.sources.get(source_id.lower())
        if source is None:
            raise ApiError(404, "ResourceNotFound", f"Ingestion source '{source_id}' does not exist", "id")
        return source

    def delete_source(self, source_id: str) -> None:
        with self.catalog._lock:
            if self.sources.pop(source_id.lower(), None) is None:
                raise ApiError(404, "ResourceNotFound", f"Ingestion source '{source_id}' does not exist", "id")

    def list_sources(self) -> list[Source]:
        with self.catalog._lock:
            return sorted(self.sources.values(), key=lambda s: s.created)

    def source_for(self, url: str) -> Source | None:
        with self.catalog._lock:
            return next((s for s in self.sources.values() if s.covers(url)), None)

    # ---------------------------------------------------------------- definitions
    def _check_collection(self, cid: str) -> None:
        self.catalog.advance()
        if self.catalog.store.get_collection(cid) is None:
            raise ApiError(404, "ResourceNotFound", collection_not_found(cid))

    @staticmethod
    def _definition_doc(body: Any, base: dict[str, Any] | None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _bad("an ingestion definition must be a JSON object", "body")
        doc = dict(base or {"skipExistingItems": False, "keepOriginalAssets": False})
        for key in ("importType", "displayName", "sourceCatalogUrl", "stacGeoparquetUrl"):
            if key in body:
                if body[key] is not None and not isinstance(body[key], str):
                    raise _bad("must be a string", key)
                doc[key] = body[key]
        for key in ("skipExistingItems", "keepOriginalAssets"):
            if key in body:
                if not isinstance(body[key], bool):
                    raise _bad("must be true or false", key)
                doc[key] = body[key]
        kind = doc.get("importType")
        if kind not in IMPORT_TYPES:
            raise _bad(f"must be one of {', '.join(IMPORT_TYPES)}, got {kind!r}", "importType")
        if kind == "StacGeoparquet":
            raise _bad("StacGeoparquet ingestion is not emulated; use StaticCatalog", "importType")
        _http_url(doc.get("sourceCatalogUrl"), "sourceCatalogUrl")
        return {k: v for k, v in doc.items() if v is not None}

    def _definition(self, cid: str, ingestion_id: str) -> Definition:
        self._check_collection(cid)
        found = self.definitions.get(ingestion_id.lower())
        if found is None or found.collection_id != cid:
            raise ApiError(404, "ResourceNotFound", f"Ingestion '{ingestion_id}' does not exist in collection '{cid}'")
        return found

    def status(self, definition: Definition) -> str:
        op = self.catalog.store.get_operation(definition.delete_op) if definition.delete_op else None
        return "Deleting" if op is not None and op.outcome is None else "Ready"

    def _ready(self, definition: Definition) -> None:
        if self.status(definition) == "Deleting":
            raise ApiError(409, "IngestionIsBeingDeleted", f"Ingestion '{definition.id}' is being deleted")

    def create_definition(self, cid: str, body: Any) -> Definition:
        with self.catalog._lock:
            self._check_collection(cid)
            definition = Definition(str(uuid.uuid4()), cid, self.catalog.clock(), self._definition_doc(body, None))
            self.definitions[definition.id] = definition
            return definition

    def update_definition(self, cid: str, ingestion_id: str, body: Any) -> Definition:
        with self.catalog._lock:
            definition = self._definition(cid, ingestion_id)
            self._ready(definition)
            definition.doc = self._definition_doc(body, definition.doc)
            return definition

    def get_definition(self, cid: str, ingestion_id: str) -> Definition:
        with self.catalog._lock:
            return self._definition(cid, ingestion_id)

    def list_definitions(self, cid: str) -> list[Definition]:
        with self.catalog._lock:
            self._check_collection(cid)
            return [d for d in self.definitions.values() if d.collection_id == cid]

    def delete_definition(self, cid: str, ingestion_id: str, path: str) -> Operation:
        with self.catalog._lock:
            definition = self._definition(cid, ingestion_id)
            if self.status(definition) == "Deleting" and definition.delete_op:  # the delete already under way
                pending = self.catalog.store.get_operation(definition.delete_op)
                if pending is not None:
                    return pending
            op = self.catalog._new_operation(DELETE_TYPE, cid, {}, "DELETE", path, 0)
            op.additional_information = {"IngestionId": definition.id}  # shown in every state (I03)
            self.catalog.store.put_operation(op)
            definition.delete_op = op.id
            return op

    def _apply_delete(self, op: Operation) -> None:
        ingestion_id = op.additional_information.get("IngestionId", "")
        definition = self.definitions.get(ingestion_id)
        if definition is not None and definition.delete_op == op.id:
            del self.definitions[ingestion_id]
        op.ended, op.outcome = op.finished, "Succeeded"

    # ---------------------------------------------------------------- runs
    def create_run(self, cid: str, ingestion_id: str, path: str) -> tuple[Definition, Run, Operation]:
        with self.catalog._lock:
            definition = self._definition(cid, ingestion_id)
            self._ready(definition)
            doc = definition.doc
            op = self.catalog._new_operation(RUN_TYPE, cid, {}, "POST", path, 0)
            op.additional_information = dict(ZERO_COUNTS)  # a run canceled while Pending keeps zeros (I17)
            op.payload = {"ingestion_id": definition.id, "skip": bool(doc.get("skipExistingItems"))}
            self.catalog.store.put_operation(op)
            run = Run(
                str(uuid.uuid4()),
                self.catalog.clock(),
                op.id,
                doc["sourceCatalogUrl"],
                bool(doc.get("skipExistingItems")),
                bool(doc.get("keepOriginalAssets")),
            )
            definition.runs[run.id] = run
            self._fetching.add(op.id)
            return definition, run, op

    def get_run(self, cid: str, ingestion_id: str, run_id: str) -> Run:
        with self.catalog._lock:
            run = self._definition(cid, ingestion_id).runs.get(run_id.lower())
        if run is None:
            raise ApiError(404, "ResourceNotFound", f"Run '{run_id}' does not exist in ingestion '{ingestion_id}'")
        return run

    def list_runs(self, cid: str, ingestion_id: str) -> list[Run]:
        with self.catalog._lock:
            return list(self._definition(cid, ingestion_id).runs.values())

    def run_view(self, run: Run) -> dict[str, Any]:
        """A run as served: its settings and its operation with integer counters (I05, I06)."""
        with self.catalog._lock:
            self.catalog.advance()
            op = self.catalog.store.get_operation(run.operation_id)
            body = op.to_json(self.catalog.clock()) if op is not None else {"id": run.operation_id}
            counts = dict(op.additional_information) if op is not None else {}
        operation = {k: body[k] for k in RUN_OPERATION_KEYS if k in body}
        for key in ("TotalItems", "TotalPendingItems", "TotalSuccessfulItems", "TotalFailedItems"):
            operation[key[0].lower() + key[1:]] = int(counts.get(key, "0"))
        return {
            "id": run.id,
            "creationTime": rfc3339(run.created),
            "sourceCatalogUrl": run.source_catalog_url,
            "skipExistingItems": run.skip_existing_items,
            "keepOriginalAssets": run.keep_original_assets,
            "operation": operation,
        }

    async def read_catalog(self, op_id: str, url: str, cid: str) -> None:
        """Read the run's static catalog (in the server's event loop) and keep its items for ``_apply_run``."""
        display = self._display
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT)) as session:
                found = await StaticCatalogReader(lambda u: self._read(session, u), display).items(url)
            result: tuple[list[tuple[str, dict[str, Any]]], tuple[str, str] | None] = (found, None)
        except CatalogReadError as exc:
            result = ([], (exc.code, redact(exc.message)))
        with self.catalog._lock:
            self._fetching.discard(op_id)
            op = self.catalog.store.get_operation(op_id)
            if op is not None and op.outcome is None:
                self._fetched[op_id] = result
                total = str(len(result[0]))
                op.additional_information = {**ZERO_COUNTS, "TotalItems": total, "TotalPendingItems": total}
                self.catalog.store.put_operation(op)

    @staticmethod
    def _display(url: str) -> str:
        return redact(strip_sas(url))

    def _with_access(self, url: str) -> tuple[str, Source | None]:
        """The URL with the SAS token of the ingestion source that covers it (when it has none of its own)."""
        source = self.source_for(url)
        if source is not None and source.sas_token and not urlsplit(url).query:
            return f"{url}?{source.sas_token}", source
        return url, source

    async def _read(self, session: aiohttp.ClientSession, url: str) -> bytes:
        signed, source = self._with_access(url)
        key = self.catalog._blob_key(signed)
        if key is not None:
            with self.catalog._lock:
                found = self.catalog.store.get_blob(key)
            parts = urlsplit(signed)
            if found is not None or parts.netloc.lower() in self.catalog.own_netlocs:
                if found is None:
                    raise CatalogReadError("StaticCatalogFetchFailed", f"{self._display(url)}: BlobNotFound")
                account, container = key.split("/")[0], key.split("/")[1]
                managed_identity = source is not None and source.kind == "BlobManagedIdentity"
                if self.catalog.is_private_account(account) and not managed_identity:
                    reason = self.catalog.sas.check(account, container, parts.query)
                    if reason is not None:
                        raise CatalogReadError(
                            "StaticCatalogFetchFailed",
                            f"{self._display(url)}: the storage account is private and the read was refused: "
                            f"{reason}; register an ingestion source for the container",
                        )
                return found[0]
        try:
            async with session.get(signed) as response:
                if response.status != 200:
                    raise CatalogReadError(
                        "StaticCatalogFetchFailed", f"{self._display(url)}: HTTP {response.status} {response.reason}"
                    )
                return await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CatalogReadError(
                "StaticCatalogFetchFailed", f"{self._display(url)}: {type(exc).__name__}: {redact(str(exc))}"
            ) from None

    def _apply_run(self, op: Operation) -> None:
        """Write the run's items into the collection once its catalog is read (a due run still reading is
        rescheduled and stays Running)."""
        fetched = self._fetched.pop(op.id, None)
        if fetched is None:
            if op.id in self._fetching:
                op.finished = self.catalog.clock() + RECHECK_SECONDS
                self.catalog._schedule(op)
                return
            fetched = ([], ("StaticCatalogFetchFailed", "the emulator restarted before the catalog was read"))
        found, error = fetched
        cid = op.collection_id or ""
        if error is not None:
            op.outcome, op.ended, op.error = "Failed", op.finished, error
            return
        skip = bool(op.payload.get("skip"))
        ok, failures = 0, []
        for item_url, item in found:
            iid = item.get("id") if isinstance(item.get("id"), str) else item_url
            item = {**item, "collection": cid}
            try:
                check_item(item, cid)
            except ApiError as exc:
                failures.append((iid, exc.code, f"Item '{iid}' ({self._display(item_url)}): {exc.message}"))
                continue
            if skip and self.catalog.store.get_item(cid, iid) is not None:
                ok += 1  # skipExistingItems: an item already in the collection counts as done
                continue
            item = self._sign_assets(item)
            failure = self.catalog._apply_item(op, cid, item, "add")
            if failure is None:
                ok += 1
            else:
                failures.append(failure)
        self.catalog._finish(op, ok, failures, len(found))
        if not found:
            op.additional_information = dict(ZERO_COUNTS)

    def _sign_assets(self, item: dict[str, Any]) -> dict[str, Any]:
        assets = item.get("assets")
        if not isinstance(assets, dict):
            return item
        signed = {}
        for key, asset in assets.items():
            if isinstance(asset, dict) and isinstance(asset.get("href"), str):
                asset = {**asset, "href": self._with_access(asset["href"])[0]}
            signed[key] = asset
        return {**item, "assets": signed}


class IngestionRoutes:
    """The ``/inma`` ingestion routes of one ``GeoCatalogApp``."""

    def __init__(self, app: GeoCatalogApp, ingestions: Ingestions) -> None:
        self.app = app
        self.ingestions = ingestions
        self._tasks: set[asyncio.Task[None]] = set()

    def register(self, application: web.Application) -> None:
        r = application.router
        sources = "/inma/ingestion-sources"
        r.add_get(sources + "/managed-identities", self.list_identities, allow_head=False)  # before /{id}
        r.add_get(sources, self.list_sources, allow_head=False)
        r.add_post(sources, self.create_source)
        r.add_get(sources + "/{id}", self.get_source, allow_head=False)
        r.add_put(sources + "/{id}", self.replace_source)
        r.add_delete(sources + "/{id}", self.delete_source)
        definitions = "/inma/collections/{collectionId}/ingestions"
        r.add_get(definitions, self.list_definitions, allow_head=False)
        r.add_post(definitions, self.create_definition)
        r.add_get(definitions + "/{ingestionId}", self.get_definition, allow_head=False)
        r.add_patch(definitions + "/{ingestionId}", self.update_definition)
        r.add_delete(definitions + "/{ingestionId}", self.delete_definition)
        r.add_get(definitions + "/{ingestionId}/runs", self.list_runs, allow_head=False)
        r.add_post(definitions + "/{ingestionId}/runs", self.create_run)
        r.add_get(definitions + "/{ingestionId}/runs/{runId}", self.get_run, allow_head=False)
        application.on_cleanup.append(self._cancel_reads)

    async def _cancel_reads(self, _application: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()

    # ---------------------------------------------------------------- helpers
    def _answer(self, body: Any, status: int = 200, location: str | None = None) -> web.Response:
        return self.app.inma_response(body, status=status, location=location)

    def _location(self, request: web.Request, path: str) -> str:
        version = request.query.get("api-version", "")
        return f"{self.app._origin(request)}{path}?api-version={version}"

    def _definition_view(self, definition: Definition) -> dict[str, Any]:
        doc = definition.doc
        body: dict[str, Any] = {"id": definition.id, "creationTime": rfc3339(definition.created)}
        for key in ("importType", "displayName", "sourceCatalogUrl", "stacGeoparquetUrl"):
            if key in doc:
                body[key] = doc[key]
        body["skipExistingItems"] = doc.get("skipExistingItems", False)
        body["keepOriginalAssets"] = doc.get("keepOriginalAssets", False)
        body["status"] = self.ingestions.status(definition)
        return body

    @staticmethod
    def _source_view(source: Source, created: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {"id": source.id, "kind": source.kind}
        if created:  # a PUT answers without 'created' (I13)
            body["created"] = rfc3339(source.created)
        body["connectionInfo"] = source.connection_info()
        return body

    # ---------------------------------------------------------------- sources
    async def list_identities(self, request: web.Request) -> web.Response:
        value = [{"objectId": i.object_id, "resourceId": i.resource_id} for i in self.ingestions.identities]
        return self.app.paged_response(request, value)

    async def list_sources(self, request: web.Request) -> web.Response:
        value = [{"id": s.id, "kind": s.kind, "created": rfc3339(s.created)} for s in self.ingestions.list_sources()]
        return self.app.paged_response(request, value)

    async def create_source(self, request: web.Request) -> web.Response:
        source = self.ingestions.create_source(await self.app._json_body(request, code="InvalidInputData"))
        location = self._location(request, f"/inma/ingestion-sources/{source.id}")
        return self._answer(self._source_view(source), status=201, location=location)

    async def get_source(self, request: web.Request) -> web.Response:
        return self._answer(self._source_view(self.ingestions.get_source(request.match_info["id"])))

    async def replace_source(self, request: web.Request) -> web.Response:
        body = await self.app._json_body(request, code="InvalidInputData")
        source = self.ingestions.replace_source(request.match_info["id"], body)
        return self._answer(self._source_view(source, created=False))

    async def delete_source(self, request: web.Request) -> web.Response:
        self.ingestions.delete_source(request.match_info["id"])
        return self.app.inma_response(None, status=204)

    # ---------------------------------------------------------------- definitions
    async def list_definitions(self, request: web.Request) -> web.Response:
        found = self.ingestions.list_definitions(request.match_info["collectionId"])
        with self.ingestions.catalog._lock:
            value = [self._definition_view(d) for d in found]
        return self.app.paged_response(request, value)

    async def create_definition(self, request: web.Request) -> web.Response:
        cid = request.match_info["collectionId"]
        body = await self.app._json_body(request, code="InvalidInputData")
        definition = self.ingestions.create_definition(cid, body)
        location = self._location(request, f"/inma/collections/{cid}/ingestions/{definition.id}")
        return self._answer(self._definition_view(definition), status=201, location=location)

    async def get_definition(self, request: web.Request) -> web.Response:
        cid, iid = request.match_info["collectionId"], request.match_info["ingestionId"]
        return self._answer(self._definition_view(self.ingestions.get_definition(cid, iid)))

    async def update_definition(self, request: web.Request) -> web.Response:
        cid, iid = request.match_info["collectionId"], request.match_info["ingestionId"]
        body = await self.app._json_body(request, code="InvalidInputData")
        return self._answer(self._definition_view(self.ingestions.update_definition(cid, iid, body)))

    async def delete_definition(self, request: web.Request) -> web.Response:
        cid, iid = request.match_info["collectionId"], request.match_info["ingestionId"]
        return self.app._accepted(request, self.ingestions.delete_definition(cid, iid, request.path))

    # ---------------------------------------------------------------- runs
    async def create_run(self, request: web.Request) -> web.Response:
        cid, iid = request.match_info["collectionId"], request.match_info["ingestionId"]
        definition, run, op = self.ingestions.create_run(cid, iid, request.path)
        task = asyncio.get_running_loop().create_task(self.ingestions.read_catalog(op.id, run.source_catalog_url, cid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        location = self._location(request, f"/inma/collections/{cid}/ingestions/{definition.id}/runs/{run.id}")
        return self._answer(self.ingestions.run_view(run), status=201, location=location)

    async def get_run(self, request: web.Request) -> web.Response:
        m = request.match_info
        run = self.ingestions.get_run(m["collectionId"], m["ingestionId"], m["runId"])
        return self._answer(self.ingestions.run_view(run))

    async def list_runs(self, request: web.Request) -> web.Response:
        runs = self.ingestions.list_runs(request.match_info["collectionId"], request.match_info["ingestionId"])
        return self.app.paged_response(request, [self.ingestions.run_view(r) for r in runs])


def register(app: GeoCatalogApp, application: web.Application) -> Ingestions:
    """Add the ingestion routes to ``application``; returns the ingestion state (for tests and the server)."""
    ingestions = Ingestions(app.catalog)
    IngestionRoutes(app, ingestions).register(application)
    return ingestions
