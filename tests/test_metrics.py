"""Metrics for a fleet: the .prom file node_exporter's textfile collector
serves, parsed with the Prometheus client's own parser."""
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from oorkiller.record import metrics
from sandbox import in_pid_namespace


def parsed(text):
    """{(name, labels as a sorted tuple): value} of every sample, by a real parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_status_rows_become_gauges_named_by_their_unit():
    rows = [{"resource": "memory", "state": "acting", "available": 1 << 30, "available_pct": 4.5,
             "term_level": 2 << 30, "reason": "MemAvailable low"},
            {"resource": "disk", "path": "/var", "state": "ok", "free": 5 << 30, "held_for": 2.5}]
    samples = parsed(metrics.render(metrics.status_samples(rows)))
    assert samples[("oorkiller_memory_available_bytes", ())] == 1 << 30
    assert samples[("oorkiller_memory_available_percent", ())] == 4.5
    assert samples[("oorkiller_memory_term_level_bytes", ())] == 2 << 30
    assert samples[("oorkiller_acting", (("resource", "memory"),))] == 1
    assert samples[("oorkiller_disk_free_bytes", (("path", "/var"),))] == 5 << 30
    assert samples[("oorkiller_disk_held_for_seconds", (("path", "/var"),))] == 2.5
    assert samples[("oorkiller_acting", (("path", "/var"), ("resource", "disk")))] == 0


def test_counters_and_hostile_label_values_parse_cleanly():
    counters = metrics.Counters()
    counters.count("oorkiller_actions_total", resource="memory", event="kill")
    counters.count("oorkiller_actions_total", resource="memory", event="kill")
    rows = [{"resource": "disk", "path": 'we"ird\\path\nx', "state": "ok", "free": 1}]
    text = metrics.render(counters.samples() + metrics.status_samples(rows) + metrics.process_samples())
    samples = parsed(text)
    assert samples[("oorkiller_actions_total", (("event", "kill"), ("resource", "memory")))] == 2
    assert samples[("oorkiller_disk_free_bytes", (("path", 'we"ird\\path\nx'),))] == 1
    assert samples[("oorkiller_process_resident_memory_bytes", ())] > 0


def test_the_file_is_replaced_whole(tmp_path):
    path = str(tmp_path / "oorkiller.prom")
    metrics.write_textfile(path, "a 1\n")
    inode = os.stat(path).st_ino
    metrics.write_textfile(path, "a 2\n")
    assert open(path).read() == "a 2\n" and os.stat(path).st_ino != inode, "renamed over, not rewritten"
    assert os.listdir(tmp_path) == ["oorkiller.prom"] and oct(os.stat(path).st_mode & 0o777) == "0o644"


@pytest.mark.parametrize("value,problem", [("relative.prom", "absolute path"),
                                           ("/var/lib/x.txt", "*.prom")])
def test_a_bad_metrics_file_is_a_config_error(value, problem):
    from oorkiller.config import ConfigError, load_config_text
    with pytest.raises(ConfigError) as err:
        load_config_text(f"metrics: {{textfile: '{value}'}}\n", "m.yaml")
    assert "m.yaml:1:" in str(err.value) and problem in str(err.value)


def test_a_scrape_during_a_real_kill_shows_the_action_counter_go_up(tmp_path):
    os.chmod(tmp_path, 0o755)
    textfile = str(tmp_path / "oorkiller.prom")
    result = in_pid_namespace("scenarios_memory", "hog_with_metrics", timeout=120, textfile=textfile)
    assert result["died"], result["records"]
    before, after = parsed(result["before"]), parsed(result["after"])

    def actions(samples):
        return sum(v for (name, labels), v in samples.items()
                   if name == "oorkiller_actions_total" and ("resource", "memory") in labels
                   and dict(labels)["event"] in ("term", "kill"))
    assert actions(before) == 0 and actions(after) >= 1
    assert after[("oorkiller_memory_available_bytes", ())] > 0
    assert ("oorkiller_records_total", (("event", "start"),)) in after
    assert after[("oorkiller_process_cpu_seconds_total", ())] > 0
