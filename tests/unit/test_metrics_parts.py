"""The MetricsPipeline's pure parts: the checks of what senders give (every refusal names the
field), the line protocol, selectors, and the column files (encodings, rollups, duplicates)."""

from __future__ import annotations

import math
import random
import re

import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hourglass.cases import Invalid
from hourglass.cases.metrics import columns, lineproto, selectors, validation

NOW = 1_800_000_000_000
WINDOW = validation.Window.at(NOW, 86_400)


@given(st.text(min_size=1, max_size=40))
def test_a_label_name_is_accepted_exactly_when_prometheus_allows_it(name: str) -> None:
    allowed = re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name) and (
        not name.startswith("__") or name == "__name__"
    )
    labels = [("__name__", "m"), (name, "v")] if name != "__name__" else [(name, "m")]
    try:
        validation.check_points([(labels, [NOW], [1.0])], WINDOW)
    except Invalid as exc:
        assert not allowed
        assert exc.field.startswith("series[0].labels[") and exc.field.endswith(".name")
    else:
        assert allowed


@given(
    st.lists(
        st.floats(allow_nan=True, allow_infinity=True) | st.just(math.nan), min_size=1, max_size=20
    ),
    st.lists(st.integers(min_value=NOW - 2 * 86_400_000, max_value=NOW + 3_600_000), min_size=1,
             max_size=20),
)  # fmt: skip
def test_values_and_timestamps_are_refused_by_index(values: list[float], stamps: list[int]) -> None:
    stamps = (stamps * 20)[: len(values)]
    try:
        validation.check_points([([("__name__", "m")], stamps, values)], WINDOW)
    except Invalid as exc:
        found = re.fullmatch(r"series\[0\]\.(values|timestamps_ms)\[(\d+)\]", exc.field)
        assert found, exc.field
        index = int(found.group(2))
        if found.group(1) == "values":
            assert not math.isfinite(values[index])
        else:
            assert not WINDOW.oldest_ms <= stamps[index] <= WINDOW.newest_ms
    else:
        assert all(map(math.isfinite, values))
        assert all(WINDOW.oldest_ms <= at <= WINDOW.newest_ms for at in stamps)


def test_a_huge_batch_and_mismatched_columns_are_refused() -> None:
    many = list(range(NOW - validation.MAX_POINTS - 1, NOW))
    with pytest.raises(Invalid, match=r"^series: 100001 points"):
        validation.check_points([([("__name__", "m")], many, [0.0] * len(many))], WINDOW)
    with pytest.raises(Invalid, match=r"^series\[0\]\.values: 1 values for 2"):
        validation.check_points([([("__name__", "m")], [NOW, NOW], [0.0])], WINDOW)
    with pytest.raises(Invalid, match=r"^series\[0\]\.labels\[1\]\.name: 'a' appears twice"):
        validation.check_points([([("a", "1"), ("a", "2")], [NOW], [0.0])], WINDOW)
    with pytest.raises(Invalid, match=r"^streams\[0\]\.lines\[0\]: at most 65536 bytes"):
        validation.check_logs([([("a", "1")], [NOW * 10**6], ["x" * 70_000])], WINDOW)


def test_line_protocol_as_influxdb_clients_write_it() -> None:
    parsed = lineproto.parse(
        b"# a comment\n"
        b"cpu,host=a,region=eu usage=12.5,count=3i,up=t,free=7u 1700000000000000000\n"
        b'syslog,host=a message="GET \\"/\\" 200" 1700000000000000001\n'
        b"net,if=eth\\ 0 rx=1 1700000000\n",
        precision="ns",
        now_ns=0,
    )
    assert parsed.points[(("__name__", "cpu_usage"), ("host", "a"), ("region", "eu"))] == (
        [1_700_000_000_000], [12.5],
    )  # fmt: skip
    assert parsed.points[(("__name__", "cpu_up"), ("host", "a"), ("region", "eu"))][1] == [1.0]
    assert parsed.points[(("__name__", "net_rx"), ("if", "eth 0"))][0] == [1700]  # ns -> ms
    assert parsed.logs == {
        (("__name__", "syslog"), ("field", "message"), ("host", "a")): (
            [1_700_000_000_000_000_001], ['GET "/" 200'],
        )
    }  # fmt: skip
    seconds = lineproto.parse(b"m v=1 1700000000", precision="s", now_ns=0)
    assert next(iter(seconds.points.values()))[0] == [1_700_000_000_000]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"cpu v=NaN", "line 1: field 'v': 'NaN' is not allowed"),
        (b"ok v=1\ncpu v=inf", "line 2: field 'v': 'inf' is not allowed"),
        (b"cpu,__x=1 v=1", "tag '__x' is not an allowed label name"),
        (b"cpu v=1 12ab", "timestamp '12ab' is not an integer"),
        (b'cpu v="open', "no closing quote"),
        (b"cpu", "needs a measurement, a space and at least one field"),
        (b"c-p-u v=1", "measurement 'c-p-u' is not a metric name"),
        (b"\n\n", "holds no points"),
    ],
)
def test_bad_line_protocol_names_the_line(body: bytes, reason: str) -> None:
    with pytest.raises(Invalid) as caught:
        lineproto.parse(body, now_ns=0)
    assert caught.value.field == "body" and reason in str(caught.value)


@given(st.binary(max_size=200))
def test_any_body_parses_or_is_refused_as_the_body(body: bytes) -> None:
    try:
        lineproto.parse(body, now_ns=0)
    except Invalid as exc:
        assert exc.field == "body"


@given(st.text(max_size=60))
def test_any_selector_parses_or_is_refused_as_the_selector(text: str) -> None:
    try:
        matchers = selectors.parse(text)
    except Invalid as exc:
        assert exc.field == "selector"
    else:
        assert matchers and not all(m.matches_empty() for m in matchers)


def test_selectors_mean_what_prometheus_means() -> None:
    matchers = selectors.parse('up{job=~"api|web", env!="dev", zone=""}')
    assert selectors.select(matchers, {"__name__": "up", "job": "api", "env": "prod"})
    assert selectors.select(matchers, {"__name__": "up", "job": "web"})  # env absent: "" != dev
    assert not selectors.select(matchers, {"__name__": "up", "job": "api", "zone": "a"})
    assert not selectors.select(matchers, {"__name__": "up", "job": "apix"})  # anchored


def regular_gauge(series: int, points: int) -> columns.pa.Table:
    """10 s scrapes of gauges that move in small steps, as a CPU or memory gauge does."""
    rng = random.Random(7)
    ids, stamps, values = [], [], []
    for sid in range(series):
        value = 50.0
        for i in range(points):
            value = round(value + rng.choice((-0.5, 0.0, 0.0, 0.5)), 1)
            ids.append(sid)
            stamps.append(NOW + i * 10_000)
            values.append(value)
    return columns.points(ids, stamps, values)


def _encodings(body: bytes) -> dict[str, tuple[str, ...]]:
    meta = pq.ParquetFile(columns.pa.BufferReader(body)).metadata.row_group(0)
    return {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(3)}


def test_short_decimals_are_stored_as_delta_encoded_mantissas_and_read_back_exactly() -> None:
    table = regular_gauge(100, 360)
    body = columns.encode(table, "points")
    assert columns.decode(body).equals(table)  # the very same doubles
    encodings = _encodings(body)
    assert "DELTA_BINARY_PACKED" in encodings["ts"]
    assert "DELTA_BINARY_PACKED" in encodings["value"]
    assert len(body) / table.num_rows <= 2.0
    one = columns.decode(body, series=[42], start=NOW + 100_000, end=NOW + 200_000)
    assert one["series"].to_pylist() == [42] * 11
    reader = columns.Reader(body)
    assert reader.read(series=[42], start=0, end=2**62).equals(
        table.filter(columns.pc.equal(table["series"], 42))
    )


def test_other_floats_use_byte_stream_split_and_read_back_exactly() -> None:
    rng = random.Random(3)
    values = [rng.random() * 1e6 for _ in range(5_000)]
    values[7], values[8] = -0.0, 5e-324  # the odd doubles too
    table = columns.points([1] * 5_000, [NOW + i for i in range(5_000)], values)
    body = columns.encode(table, "points")
    assert "BYTE_STREAM_SPLIT" in _encodings(body)["value"]
    assert columns.decode(body)["value"].to_pylist() == values
    assert columns.decimal_scale(columns.pa.array([0.1, 0.30000000000000004])) is None
    assert columns.decimal_scale(columns.pa.array([1.5, -2.25, 3.0])) == 2


def test_rollups_of_rollups_equal_rollups_of_points_and_duplicates_collapse() -> None:
    table = regular_gauge(3, 400)
    direct = columns.rollup(table, 300_000)
    halves = [table.slice(0, 500), table.slice(500)]
    merged = columns.rollup(
        columns.concat([columns.rollup(h, 60_000) for h in halves], "rollups"), 300_000
    )
    assert merged.equals(direct)
    doubled = columns.concat([table, table.slice(100, 50)], "points")
    assert columns.unique(doubled, "points").equals(table)
