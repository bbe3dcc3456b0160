"""GET /metrics scraped by a real Prometheus server during a short load.

A fresh `spillway serve` and a Prometheus (/usr/bin/prometheus, Debian package `prometheus`)
on 127.0.0.1 scraping it every second. 20 streaming completions at concurrency 4 measure TTFT
on the client; then Prometheus' query API must agree:

- p99 TTFT: histogram_quantile(0.99, ...) over the TTFT buckets (the cumulative buckets of this
  fresh server, which hold exactly the load's requests) and the client's p99 must fall in the same
  histogram bucket or adjacent ones. The histogram only knows which bucket a value is in
  (histogram_quantile interpolates inside it), and the client's TTFT is a few ms longer than
  the server's (HTTP, SSE framing), which can push it over a bucket edge: so one bucket of slack.
- spillway_kv_usage_ratio is present, in [0, 1], and equals /health's kv_used/kv_total.
- spillway_requests_total{api="http"} counts the 20 requests.
"""

import concurrent.futures
import json
import math
import os
import pathlib
import shutil
import subprocess
import time

import pytest
import requests

from conftest import MODEL_NAME, Server, free_port, wait_until_ok

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
NUM_REQUESTS = 20
CONCURRENCY = 4
# The server's TTFT buckets (server/metrics/server_metrics.cc LatencyBuckets).
BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
           0.75, 1, 1.5, 2, 2.5, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300, 600, math.inf]

pytestmark = pytest.mark.skipif(not os.path.exists(PROMETHEUS),
                                reason="prometheus is not installed (scripts/setup.sh)")


class Prometheus:
    def __init__(self, tmp: pathlib.Path, target: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: spillway\n    scrape_interval: 1s\n"
            f"    static_configs:\n      - targets: ['{target}']\n")
        self.log_path = tmp / "prometheus.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_until_ok(self.proc, self.url + "/-/ready", self.log_text, interval=0.2)

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def query(self, promql: str) -> list:
        r = requests.get(self.url + "/api/v1/query", params={"query": promql}, timeout=10)
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def scalar(self, promql: str) -> float:
        result = self.query(promql)
        assert len(result) == 1, f"{promql}: {result}"
        return float(result[0]["value"][1])

    def wait_for(self, promql: str, predicate, timeout: float = 30) -> float:
        """Polls `promql` (one series) until predicate(value) holds; returns the value."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            result = self.query(promql)
            if len(result) == 1:
                last = float(result[0]["value"][1])
                if predicate(last):
                    return last
            time.sleep(0.5)
        pytest.fail(f"{promql} never satisfied the condition (last {last}):\n{self.log_text()}")

    def scrapes(self) -> float:
        return self.scalar('count_over_time(up{job="spillway"}[10m])')

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("metrics-server"))
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{server.port}")
    yield server, prom
    prom.stop()
    assert server.stop() == 0, server.log_text()


def bucket_index(value: float) -> int:
    return next(i for i, le in enumerate(BUCKETS) if value <= le)


def streamed_ttft(url: str, i: int) -> float:
    body = {"model": MODEL_NAME, "prompt": f"Count from {i} to {i + 20}:", "max_tokens": 8,
            "temperature": 0, "stream": True}
    start = time.monotonic()
    ttft = None
    with requests.post(url + "/v1/completions", json=body, stream=True, timeout=120) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[len(b"data: "):])
            if ttft is None and chunk["choices"]:
                ttft = time.monotonic() - start
    assert ttft is not None
    return ttft


def test_metrics_text_format(stack):
    server, _ = stack
    r = requests.get(server.url + "/metrics", timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "# TYPE spillway_time_to_first_token_seconds histogram" in r.text
    assert f'spillway_kv_usage_ratio{{model="{MODEL_NAME}",tier="device"}}' in r.text


def test_prometheus_agrees_with_the_load(stack):
    server, prom = stack
    # The series exist (at 0) before the load, so increase() and the buckets see all of it.
    prom.wait_for('sum(spillway_time_to_first_token_seconds_count{api="http"})',
                  lambda v: v == 0)
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        ttfts = list(pool.map(lambda i: streamed_ttft(server.url, i), range(NUM_REQUESTS)))

    # Wait until Prometheus has scraped the end of the load, then two more scrapes.
    prom.wait_for('sum(spillway_requests_total{api="http"})', lambda v: v >= NUM_REQUESTS)
    before = prom.scrapes()
    prom.wait_for('count_over_time(up{job="spillway"}[10m])', lambda v: v >= before + 2)

    assert prom.scalar('sum(spillway_requests_total{api="http"})') == NUM_REQUESTS
    assert prom.scalar('sum(spillway_time_to_first_token_seconds_count{api="http"})') == \
        NUM_REQUESTS
    assert prom.query('sum(spillway_errors_total{api="http"}) > 0') == []

    # p99 (nearest rank) of the client's 20 measurements is the largest one.
    client_p99 = sorted(ttfts)[math.ceil(0.99 * len(ttfts)) - 1]
    server_p99 = prom.scalar('histogram_quantile(0.99, sum by (le) '
                             '(spillway_time_to_first_token_seconds_bucket{api="http"}))')
    print(f"p99 TTFT: Prometheus {server_p99:.4f}s, client {client_p99:.4f}s")
    assert abs(bucket_index(server_p99) - bucket_index(client_p99)) <= 1, \
        f"server p99 TTFT {server_p99:.4f}s vs client {client_p99:.4f}s (buckets {BUCKETS})"
    # The rate form dashboards use gives a finite number while the load is in its window.
    rate_p99 = prom.scalar('histogram_quantile(0.99, sum by (le) '
                           '(rate(spillway_time_to_first_token_seconds_bucket[1m])))')
    assert math.isfinite(rate_p99) and rate_p99 > 0

    # KV usage: idle now, so /health and the last scrape see the same occupancy.
    health = server.health()
    used, total = health["kv_used_blocks"], health["kv_total_blocks"]
    ratio = prom.wait_for(f'spillway_kv_usage_ratio{{model="{MODEL_NAME}",tier="device"}}',
                          lambda v: abs(v - used / total) < 1e-9)
    assert 0 <= ratio <= 1
    assert prom.scalar('spillway_kv_blocks{tier="device",state="free"}') == total - used
    assert prom.scalar('sum(spillway_generation_tokens_total{api="http"})') > 0
    assert prom.scalar('sum(spillway_iteration_tokens_count)') > 0


def test_dashboard_and_alert_queries_evaluate(stack):
    """Every query of deploy/grafana and deploy/prometheus/alerts.yml runs on the scraped data."""
    import yaml

    _, prom = stack
    repo = pathlib.Path(__file__).resolve().parents[2]
    dashboard = json.loads((repo / "deploy/grafana/spillway-dashboard.json").read_text())
    exprs = [t["expr"].replace("$__rate_interval", "1m").replace("$model", ".*")
             for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for e in exprs:
        prom.query(e)  # asserts status success
    # The panels the load fed have data (the load test above ran first in this module).
    for e in exprs:
        if "spillway_generation_tokens_total" in e or "spillway_kv_usage_ratio" in e or \
                "spillway_requests_running" in e:
            assert prom.query(e), e
    rules = yaml.safe_load((repo / "deploy/prometheus/alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    for r in alerts:
        # None fires on an idle, healthy server after a light load.
        assert prom.query(r["expr"]) == [], r["alert"]
