"""Connectors on object storage, run as a user runs them (`timelapse run` in a subprocess) against moto's S3 server:
filesystem sources and Delta sources, sinks and lookup dimensions at `s3://` paths, per-table `'storage.*'`
options instead of the environment, refusals of unsupported schemes and missing buckets, and allowed roots that
name URIs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from deltalake import write_deltalake

from tests.helpers import duck, sort_all

S3_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def timelapse(workdir: Path, sql: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    (workdir / "pipeline.sql").write_text(sql)
    command = [sys.executable, "-m", "engine.cli", "run", "pipeline.sql", "--state", "state", "--once", "--quiet"]
    environment = env if env is not None else dict(os.environ)
    return subprocess.run([*command, *args], cwd=workdir, env=environment, capture_output=True, text=True, timeout=120)


def cli_in_process(workdir: Path, sql: str, capsys: pytest.CaptureFixture[str]) -> subprocess.CompletedProcess:
    """`timelapse run` through the CLI's entry point in this process (for refusals, which stop before running)."""
    from engine.cli import main

    (workdir / "pipeline.sql").write_text(sql)
    capsys.readouterr()
    code = main(["run", str(workdir / "pipeline.sql"), "--state", str(workdir / "state"), "--once", "--quiet"])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([], code, out, err)


def put_lines(s3: Any, bucket: str, key: str, rows: list[dict[str, Any]], extra: list[str] = ()) -> None:
    lines = [json.dumps(r) for r in rows] + list(extra)
    s3.client.put_object(Bucket=bucket, Key=key, Body="".join(line + "\n" for line in lines).encode())


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr and "panicked" not in result.stderr, result.stderr
    return lines[0]


EVENTS = """
CREATE TABLE events (k STRING, v BIGINT)
  WITH ('connector' = 'filesystem', 'path' = 's3://{bucket}/in', 'format' = 'json');
CREATE TABLE big (k STRING, v BIGINT) WITH ('connector' = 'delta', 'path' = 's3://{bucket}/out/big');
CREATE TABLE totals (k STRING, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
  WITH ('connector' = 'delta', 'path' = 's3://{bucket}/out/totals');
INSERT INTO big SELECT k, v FROM events WHERE v > 3;
INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM events GROUP BY k;
"""


def test_json_files_on_s3_to_delta_on_s3_exactly_once(s3: Any, tmp_path: Path) -> None:
    bucket = s3.bucket()
    first = [{"k": f"k{i % 3}", "v": i} for i in range(10)]
    put_lines(s3, bucket, "in/a.json", first[:6], extra=["{not json"])
    put_lines(s3, bucket, "in/day=2/b.json", first[6:])
    put_lines(s3, bucket, "in/_tmp/ignored.json", [{"k": "x", "v": 100}])  # in progress: skipped
    sql = EVENTS.format(bucket=bucket)
    assert timelapse(tmp_path, sql).returncode == 0
    later = [{"k": f"k{i % 4}", "v": i} for i in range(10, 16)]
    put_lines(s3, bucket, "in/c.json", later)
    result = timelapse(tmp_path, sql)
    assert result.returncode == 0, result.stderr

    rows = pl.DataFrame(first + later)
    expected_big = duck("SELECT k, v FROM e WHERE v > 3", e=rows)
    expected_totals = duck("SELECT k, COUNT(*) AS n, SUM(v)::BIGINT AS s FROM e GROUP BY k", e=rows)
    big = pl.read_delta(f"s3://{bucket}/out/big")
    totals = pl.read_delta(f"s3://{bucket}/out/totals")
    assert sort_all(big).equals(sort_all(expected_big.cast(big.schema)))
    assert sort_all(totals).equals(sort_all(expected_totals.cast(totals.schema)))
    # The bad line is a dead letter naming its file by URI; the offset log names files relative to the prefix.
    dead = pl.read_delta(str(tmp_path / "state" / "dead_letters" / "events"))
    assert dead.select("file", "position").rows() == [(f"s3://{bucket}/in/a.json", 6)]
    logged = [json.loads(p.read_text()) for p in sorted((tmp_path / "state" / "offsets").glob("*.json"))]
    names = [f["path"] for e in logged for f in e["sources"].get("events", {}).get("files_added", [])]
    assert sorted(names) == ["a.json", "c.json", "day=2/b.json"]
    assert not list(tmp_path.glob("s3*")), "nothing local named after the URI"


def test_discovery_is_one_listing(s3: Any, tmp_path: Path) -> None:
    """A discovery is one LIST whatever the number of files; a file is read by one ranged GET."""
    from engine import storage
    from engine.sources.filesystem import FileSource
    from sql.catalog import Column, TableDef

    bucket = s3.bucket()
    for i in range(40):
        put_lines(s3, bucket, f"in/{i:02d}.json", [{"k": "a", "v": i}])
    table = TableDef(
        "events",
        (Column("k", pl.String()), Column("v", pl.Int64())),
        {"connector": "filesystem", "path": f"s3://{bucket}/in", "format": "json"},
    )
    source = FileSource(table, tmp_path)
    source.restore(None, [])
    before = storage.REQUESTS["count"]
    piece = source.plan(None)
    assert piece is not None and len(piece["files_added"]) == 40
    assert storage.REQUESTS["count"] - before == 1 + 40  # one LIST, one ranged GET per new file
    assert source.read(piece).rows.height == 40
    source.advance(piece)
    before = storage.REQUESTS["count"]
    assert source.plan(None) is None
    assert storage.REQUESTS["count"] - before == 1  # nothing new: one LIST, no HEAD per file


def test_delta_source_and_lookup_dimensions_on_s3(s3: Any, tmp_path: Path) -> None:
    bucket = s3.bucket()
    orders = pl.DataFrame({"id": [1, 2, 3, 4], "cust": [1, 2, 3, 9], "ts": [1, 2, 3, 4]})
    write_deltalake(f"s3://{bucket}/orders", orders.to_arrow())
    write_deltalake(f"s3://{bucket}/customers", pl.DataFrame({"id": [1, 2, 3], "name": ["ann", "bob", "cy"]}))
    put_lines(s3, bucket, "regions/r.json", [{"cust": 1, "region": "eu"}, {"cust": 3, "region": "us"}])
    sql = f"""
    CREATE TABLE orders (id BIGINT, cust BIGINT, ts BIGINT, p AS PROCTIME())
      WITH ('connector' = 'delta', 'path' = 's3://{bucket}/orders');
    CREATE TABLE customers (id BIGINT, name STRING) WITH ('connector' = 'delta', 'path' = 's3://{bucket}/customers');
    CREATE TABLE regions (cust BIGINT, region STRING)
      WITH ('connector' = 'filesystem', 'path' = 's3://{bucket}/regions', 'format' = 'json');
    CREATE TABLE out (oid BIGINT, name STRING, region STRING)
      WITH ('connector' = 'delta', 'path' = 's3://{bucket}/out');
    INSERT INTO out SELECT o.id, c.name, r.region FROM orders AS o
      LEFT JOIN customers FOR SYSTEM_TIME AS OF o.p AS c ON o.cust = c.id
      LEFT JOIN regions FOR SYSTEM_TIME AS OF o.p AS r ON o.cust = r.cust;
    """
    result = timelapse(tmp_path, sql)
    assert result.returncode == 0, result.stderr
    write_deltalake(f"s3://{bucket}/orders", pl.DataFrame({"id": [5], "cust": [2], "ts": [5]}), mode="append")
    result = timelapse(tmp_path, sql)
    assert result.returncode == 0, result.stderr
    out = pl.read_delta(f"s3://{bucket}/out").sort("oid")
    assert out.rows() == [
        (1, "ann", "eu"),
        (2, "bob", None),
        (3, "cy", "us"),
        (4, None, None),
        (5, "bob", None),
    ]


def test_storage_options_instead_of_the_environment(s3: Any, tmp_path: Path) -> None:
    bucket = s3.bucket()
    put_lines(s3, bucket, "in/a.json", [{"k": "a", "v": 5}, {"k": "b", "v": 1}])
    secret = "s3cr3t-value-never-shown"
    options = (
        f"'storage.aws_endpoint_url' = '{s3.endpoint}', 'storage.aws_allow_http' = 'true', "
        f"'storage.aws_region' = 'us-east-1', 'storage.aws_access_key_id' = 'testing', "
        f"'storage.aws_secret_access_key' = '{secret}'"
    )
    sql = f"""
    CREATE TABLE events (k STRING, v BIGINT)
      WITH ('connector' = 'filesystem', 'path' = 's3://{bucket}/in', 'format' = 'json', {options});
    CREATE TABLE big (k STRING, v BIGINT) WITH ('connector' = 'delta', 'path' = 's3://{bucket}/out', {options});
    INSERT INTO big SELECT k, v FROM events WHERE v > 3;
    """
    env = {k: v for k, v in os.environ.items() if k not in S3_VARIABLES and not k.startswith("AWS_")}
    env["HOME"] = str(tmp_path)  # no ~/.aws either
    result = timelapse(tmp_path, sql, env=env)
    assert result.returncode == 0, result.stderr
    assert pl.read_delta(f"s3://{bucket}/out").rows() == [("a", 5)]
    explain = subprocess.run(
        [sys.executable, "-m", "engine.cli", "explain", "pipeline.sql"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert explain.returncode == 0 and secret not in explain.stdout + explain.stderr
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    # A missing bucket, reached through the same options: one line, exit 2, no traceback.
    result = timelapse(
        tmp_path, sql.replace(f"s3://{bucket}/out", "s3://no-such-bucket-x/out"), "--state", "s2", env=env
    )
    assert result.returncode == 2
    assert "bucket 'no-such-bucket-x' does not exist" in one_error_line(result)
    assert secret not in result.stderr


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("s3://{b}/out", "foo://x/out"),
            "the scheme foo:// is not supported",
        ),  # a sink: refused while the SQL is checked
        (("s3://{b}/in", "hdfs://namenode/in"), "the scheme hdfs:// is not supported"),
        (("s3://{b}/in", "http://example.com/in"), "the scheme http:// is not supported"),
        (("'format' = 'json'", "'format' = 'json', 'storage.aws_regoin' = 'x'"), "did you mean 'storage.aws_region'"),
        (("s3://{b}/in", "in"), "is local"),  # storage options on a local path
    ],
)
def test_refusals(
    s3: Any, tmp_path: Path, change: tuple[str, str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = s3.bucket()
    sql = f"""
    CREATE TABLE events (k STRING, v BIGINT) WITH ('connector' = 'filesystem', 'path' = 's3://{bucket}/in',
      'format' = 'json', 'storage.aws_region' = 'us-east-1');
    CREATE TABLE big (k STRING, v BIGINT) WITH ('connector' = 'delta', 'path' = 's3://{bucket}/out');
    INSERT INTO big SELECT k, v FROM events;
    """
    old, new = change
    if expected != "is local":
        sql = sql.replace(old.format(b=bucket), new)
    else:
        sql = sql.replace(f"'s3://{bucket}/in'", "'in'")
    result = cli_in_process(tmp_path, sql, capsys)  # refused before anything runs: no subprocess needed
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert expected in line and line.startswith("error: line "), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline.sql"], "nothing written"
    assert s3.keys(bucket) == []


def test_allowed_roots_name_uris(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = s3.bucket()
    put_lines(s3, bucket, "allowed/in/a.json", [{"k": "a", "v": 5}])
    put_lines(s3, bucket, "other/a.json", [{"k": "a", "v": 5}])
    sql = f"""
    CREATE TABLE events (k STRING, v BIGINT) WITH ('connector' = 'filesystem', 'path' = 's3://{bucket}/SOURCE');
    CREATE TABLE big (k STRING, v BIGINT) WITH ('connector' = 'delta', 'path' = 's3://{bucket}/SINK');
    INSERT INTO big SELECT k, v FROM events;
    """
    env = dict(os.environ)
    env["TIMELAPSE_ALLOWED_ROOTS"] = f"{tmp_path}:s3://{bucket}/allowed"

    def run(source: str, sink: str, *args: str, roots: str | None = None) -> subprocess.CompletedProcess:
        here = dict(env, TIMELAPSE_ALLOWED_ROOTS=roots) if roots is not None else env
        return timelapse(tmp_path, sql.replace("SOURCE", source).replace("SINK", sink), *args, env=here)

    assert run("allowed/in", "allowed/out").returncode == 0
    assert pl.read_delta(f"s3://{bucket}/allowed/out").height == 1
    # Refusals stop before anything runs: checked through the CLI's entry point in this process.
    monkeypatch.setenv("TIMELAPSE_ALLOWED_ROOTS", env["TIMELAPSE_ALLOWED_ROOTS"])
    for source, sink in (("other", "allowed/out2"), ("allowed/in", "other-out"), ("allowed/in", "allowed/../x")):
        result = cli_in_process(tmp_path, sql.replace("SOURCE", source).replace("SINK", sink), capsys)
        assert result.returncode == 2
        assert "outside the allowed roots" in one_error_line(result)
    assert not any(k.startswith(("other-out", "x/", "allowed/out2")) for k in s3.keys(bucket))
    # Only local roots: no object path is inside them. `--allowed-root` adds a URI to them.
    monkeypatch.setenv("TIMELAPSE_ALLOWED_ROOTS", str(tmp_path))
    result = cli_in_process(tmp_path, sql.replace("SOURCE", "allowed/in").replace("SINK", "allowed/out3"), capsys)
    assert result.returncode == 2 and "outside the allowed roots" in one_error_line(result)
    assert (
        run("allowed/in", "allowed/out3", "--allowed-root", f"s3://{bucket}/allowed", roots=str(tmp_path)).returncode
        == 0
    )
