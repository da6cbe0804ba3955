"""Scrape a Prometheus text endpoint and parse it with Prometheus's own Python client, which
refuses what is not valid exposition format.

Usage: scrape_metrics.py URL
Prints one JSON list: [{"name": ..., "labels": {...}, "value": ...}, ...], one per sample.
"""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
samples = [
    {"name": s.name, "labels": s.labels, "value": s.value}
    for family in text_string_to_metric_families(text)
    for s in family.samples
]
print(json.dumps(samples))
