"""The benchmark's table (tests/bench/run.py rows/table): one table holding the nftables mode's DNS rows and the
systemd-resolved mode's beside them, each against the direct path measured in the same run."""

from __future__ import annotations

import json

from tests.bench.run import RESOLVED_SUFFIX, config_of, parse_args, rows, table


def dns(p50: float, p99: float) -> dict[str, float]:
    return {"p50_ms": p50, "p99_ms": p99, "count": 300}


def measured_dns_only() -> dict:
    return {
        "results": {
            "dns_uncached": {"tether": dns(2.0, 4.0), "direct": dns(1.0, 2.0)},
            "dns_cached": {"tether": dns(0.3, 0.6), "direct": dns(0.2, 0.4)},
            "dns_uncached" + RESOLVED_SUFFIX: {"tether": dns(3.0, 6.0), "direct": dns(1.5, 3.0)},
            "dns_cached" + RESOLVED_SUFFIX: {"tether": dns(0.1, 0.2), "direct": dns(0.2, 0.4)},
        }
    }


def test_both_modes_dns_rows_are_in_one_table_each_with_its_own_direct_reference() -> None:
    got = {r["metric"]: r for r in rows(measured_dns_only())}
    assert list(got) == [
        "DNS uncached p50",
        "DNS uncached p99",
        "DNS cached p50",
        "DNS cached p99",
        "DNS uncached p50, systemd-resolved",
        "DNS uncached p99, systemd-resolved",
        "DNS cached p50, systemd-resolved",
        "DNS cached p99, systemd-resolved",
    ]
    assert got["DNS uncached p50"]["ratio"] == 2.0
    assert got["DNS uncached p50, systemd-resolved"]["ratio"] == 2.0
    assert got["DNS uncached p50, systemd-resolved"]["tether"] == 3.0
    assert got["DNS cached p50, systemd-resolved"]["ratio"] == 0.5
    assert got["DNS cached p50, systemd-resolved"]["met"] is True  # the cached target applies to both modes


def test_rows_of_phases_not_measured_are_left_out() -> None:
    labels = [r["metric"] for r in rows(measured_dns_only())]
    assert not any(label.startswith(("bulk", "req/resp", "connect")) for label in labels)
    text = table(rows(measured_dns_only()))
    assert "DNS cached p50, systemd-resolved (ms)" in text and "0.50x" in text


def test_resolved_is_a_part_of_its_own_and_of_the_default_run() -> None:
    assert parse_args(["--only", "resolved"]).only == {"resolved"}
    assert "resolved" in parse_args([]).only


def test_the_json_report_holds_the_options_with_parts_as_a_list() -> None:
    config = json.loads(json.dumps(config_of(parse_args(["--only", "resolved,table", "--json", "x.json"]))))
    assert config["only"] == ["resolved", "table"] and "json" not in config
