"""The metrics a worker exposes, the Grafana dashboard that queries them and docs/observability.md agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from worker import __version__
from worker.observability.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "helm/geocatalog-worker/dashboards/geocatalog-worker.json"
DOC = REPO / "docs/observability.md"
NAME = re.compile(r"\b((?:gcw|process|python)_[a-z_]+)\b")
BY = re.compile(r"by \(([^)]*)\)")
MATCHERS = re.compile(r"\{([^}]*)\}")


def exposed() -> dict[str, set[str]]:
    """Sample name -> label names, after one observation of every labelled series."""
    m = Metrics()
    m.results.labels(status="succeeded").inc()
    m.dead_lettered.labels(reason="InvalidRequest").inc()
    m.geocatalog_requests.labels("POST", "items", "202").observe(0.1)
    m.operation_duration.labels("AddItem", "Succeeded").observe(6.0)
    m.sas_cache.labels("hit").inc()
    m.end_to_end.labels(status="succeeded").observe(7.0)
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(set(sample.labels) - {"le"})
    return samples


def test_the_registry_has_the_process_collectors_and_build_info() -> None:
    samples = exposed()
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"} <= set(samples)
    text = Metrics().render().decode()
    assert 'gcw_build_info{python="' in text and f'version="{__version__}"' in text


def test_http_codes_are_labelled_code_and_statuses_status() -> None:
    samples = exposed()
    assert samples["gcw_geocatalog_request_seconds_count"] == {"method", "route", "code"}
    assert samples["gcw_requests_finished_total"] == {"status"}
    assert samples["gcw_request_end_to_end_seconds_count"] == {"status"}


def test_every_dashboard_query_names_exposed_series_and_labels() -> None:
    samples = exposed()
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        names = NAME.findall(expr)
        assert names, expr
        for name in names:
            assert name in samples, f"dashboard queries {name}, which /metrics does not expose"
            # labels grouped by or matched on must exist on the series (namespace/job/pod come from the scrape)
            wanted = {x.strip() for g in BY.findall(expr) for x in g.split(",")} - {"le"}
            wanted |= {kv.split("=")[0].strip().rstrip("!~") for g in MATCHERS.findall(expr) for kv in g.split(",")}
            wanted -= {"namespace", "job", "pod", ""}
            assert wanted <= samples[name], f"{expr}: labels {wanted - samples[name]} not on {name}"


def test_every_gcw_series_is_documented() -> None:
    doc = DOC.read_text()
    families = {name.removesuffix("_total").removesuffix("_count") for name in exposed() if name.startswith("gcw_")}
    families = {re.sub(r"_(bucket|sum|created)$", "", f) for f in families}
    missing = sorted(f for f in families if f not in doc)
    assert not missing, f"docs/observability.md does not mention {missing}"
