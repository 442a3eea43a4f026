"""Encryption at rest: declared sensitive columns never reach a file in plaintext, on a local disk or on S3, and
read back with the key; every object the engine writes to S3 carries the requested server-side encryption."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import engine
from engine import delta_tables, encryption
from tests.helpers import duck, naive, sort_all, write_jsonl

BASE_MS = 1_767_225_600_000
CARDS = [f"4111-2222-3333-{i:04d}" for i in range(6)]
EMAILS = [f"person{i}@secret-mail.example" for i in range(4)]
BAD_CARD = "5500-9999-8888-7777"  # only in the bad line: must be sealed in the dead-letter table

SQL = """
CREATE TABLE payments (id BIGINT, user_id BIGINT, card STRING, email STRING, amount INT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
WITH ('connector' = 'filesystem', 'path' = '{src}', 'format' = 'json', 'encrypt.columns' = 'card,email');
CREATE TABLE per_card (card STRING, window_start TIMESTAMP(3), n BIGINT, total INT)
WITH ('connector' = 'delta', 'path' = '{out}/per_card');
CREATE TABLE top2 (user_id BIGINT, email STRING, amount INT, rn BIGINT, PRIMARY KEY (user_id, rn) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = '{out}/top2');
INSERT INTO per_card SELECT card, window_start, COUNT(*) AS n, SUM(amount) AS total
FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY card, window_start, window_end;
INSERT INTO top2 SELECT user_id, email, amount, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY amount DESC, id) AS rn FROM payments) WHERE rn <= 2;
"""


def rows(start: int, count: int) -> list[dict[str, object]]:
    return [
        {
            "id": i,
            "user_id": i % 3,
            "card": CARDS[i % len(CARDS)],
            "email": EMAILS[i % len(EMAILS)],
            "amount": (i * 7) % 23,
            "ts": BASE_MS + i * 1000,
        }
        for i in range(start, start + count)
    ]


def write_input(src: Path) -> list[dict[str, object]]:
    first, second = rows(0, 40), rows(40, 40)
    late = {**rows(80, 1)[0], "ts": BASE_MS, "card": CARDS[1]}  # far behind the watermark: a late row
    bad = '{"id": 999, "card": "' + BAD_CARD + '", "amount": "not a number"'  # a dead letter with a card in it
    write_jsonl(src / "1.json", first)
    write_jsonl(src / "2.json", [*second, late], extra_lines=[bad])
    return [*first, *second, late]


def key_env(key: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELAPSE_")}
    env["TIMELAPSE_KEY"] = key or KEY
    return env


KEY = secrets.token_hex(32)


def timelapse(
    cwd: Path, *args: str, env: dict[str, str], crash_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    if crash_at:
        env = {**env, "TIMELAPSE_CRASH_AT": crash_at}
    command = [sys.executable, "-m", "engine.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def run_pipeline(cwd: Path, state: str, env: dict[str, str], crash_at: str | None = None) -> None:
    result = timelapse(cwd, "run", "pipeline.sql", "--state", state, "--max-epoch-rows", "30", "--once", "--quiet",
                       env=env, crash_at=crash_at)  # fmt: skip
    assert result.returncode == (-9 if crash_at else 0), result.stderr[-2000:]


def forget_keys() -> None:
    encryption.KEYS = encryption.Keyring()


def oracle(data: list[dict[str, object]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    frame = pl.DataFrame(data).with_columns(pl.col("ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"))
    # the late row is not counted; the last window [70 s, 80 s) has not closed (the watermark is at 77 s)
    closed = pl.col("ts") < pl.lit(BASE_MS + 70_000).cast(pl.Datetime("ms", "UTC"))
    on_time = frame.filter((pl.col("id") != 80) & closed)
    per_card = duck(
        "SELECT card, time_bucket(INTERVAL 10 SECOND, ts) AS window_start, count(*) AS n, sum(amount)::INT AS total "
        "FROM src GROUP BY ALL",
        src=on_time,
    )
    top2 = duck(
        "SELECT user_id, email, amount::INT AS amount, rn FROM (SELECT *, row_number() OVER "
        "(PARTITION BY user_id ORDER BY amount DESC, id) AS rn FROM src) WHERE rn <= 2",
        src=frame,
    )
    return per_card, top2


def check_results(out: str, data: list[dict[str, object]], state: str) -> None:
    """With the key: sinks equal DuckDB, and engine.open shows state, late rows and dead letters in plaintext.
    Without it: ciphertext (binary)."""
    forget_keys()
    encryption.use_key("env:TIMELAPSE_KEY")
    per_card, top2 = oracle(data)
    got = naive(delta_tables.read(f"{out}/per_card"))
    assert_frame_equal(sort_all(got), sort_all(per_card.cast(got.schema)))  # type: ignore[arg-type]
    got_top = engine.open(state).sink("top2")
    assert_frame_equal(sort_all(got_top), sort_all(top2.cast(got_top.schema)))  # type: ignore[arg-type]
    history = engine.open(state)
    seen: set[str] = set()
    for op in history.operators()["operator"]:
        frame = history.state(op)
        for column in set(frame.columns) & {"card", "email"}:
            assert frame.schema[column] == pl.String
            seen.update(frame[column].drop_nulls().to_list())
    assert set(CARDS) <= seen and set(EMAILS) <= seen  # the window's keys and the Top-N rows, decrypted
    late = pl.concat([history.late(op) for op in history.operators()["operator"]], how="diagonal_relaxed")
    assert late["card"].to_list() == [CARDS[1]]
    assert BAD_CARD in history.dead_letters("payments")["raw"][0]
    forget_keys()
    os.environ.pop("TIMELAPSE_KEY", None)
    history = engine.open(state)
    sealed = history.sink("top2")
    assert sealed.schema["email"] == pl.Binary
    assert not set(sealed["email"].to_list()) & {e.encode() for e in EMAILS}
    assert history.dead_letters("payments").schema["raw"] == pl.Binary


def all_bytes_local(*roots: Path) -> list[tuple[str, bytes]]:
    return [(str(p), p.read_bytes()) for root in roots for p in root.rglob("*") if p.is_file()]


def assert_no_plaintext(files: list[tuple[str, bytes]]) -> None:
    assert files
    secrets_ = [v.encode() for v in [*CARDS, *EMAILS, BAD_CARD]]
    leaks = [(name, s) for name, data in files for s in secrets_ if s in data]
    assert not leaks, leaks[:5]


# -- values ------------------------------------------------------------------------------------------------
def test_values_round_trip_fast_and_bound_to_their_column() -> None:
    key = encryption.Key("given", secrets.token_bytes(32))
    forget_keys()
    encryption.KEYS.add(key)
    values = pl.Series("card", [f"4111-{i:012d}" for i in range(10_000)])
    record = {"type": encryption._type_record(values.to_arrow().type), "key": "given", "kid": key.kid.hex()}
    encryption.decrypt(encryption.encrypt(values.head(10), "card", key), "card", record)  # imports, warm-up
    started = time.perf_counter()
    sealed = encryption.encrypt(values, "card", key)
    encrypt_s = time.perf_counter() - started
    started = time.perf_counter()
    opened = encryption.decrypt(sealed, "card", record)
    decrypt_s = time.perf_counter() - started
    print(f"10k values: encrypt {encrypt_s * 1000:.1f} ms, decrypt {decrypt_s * 1000:.1f} ms")
    assert encrypt_s < 0.5 and decrypt_s < 0.5
    assert opened.to_list() == values.to_list()
    assert sealed.dtype == pl.Binary and len(set(sealed.to_list())) == 10_000  # a nonce per value
    with pytest.raises(encryption.KeyError_, match="another column"):
        encryption.decrypt(sealed, "email", record)  # moved to another column: does not authenticate
    other = encryption.Key("given", secrets.token_bytes(32))
    with pytest.raises(encryption.KeyError_, match="wrong key"):
        encryption.decrypt(encryption.encrypt(values.head(3), "card", other), "card", record)
    times = pl.Series("ts", [1, None, 3], pl.Int64).cast(pl.Datetime("us", "UTC"))
    record_ts = {"type": encryption._type_record(times.to_arrow().type), "key": "given", "kid": key.kid.hex()}
    assert encryption.decrypt(encryption.encrypt(times, "ts", key), "ts", record_ts).to_list() == times.to_list()
    forget_keys()


# -- a pipeline on a local disk -------------------------------------------------------------------------------
def test_local_pipeline_never_writes_plaintext(tmp_path: Path) -> None:
    data = write_input(tmp_path / "payments")
    (tmp_path / "pipeline.sql").write_text(SQL.format(src="payments", out="out"))
    env = key_env()
    run_pipeline(tmp_path, "state", env, crash_at="sink.commit.after:2")  # killed mid-run, then restarted
    run_pipeline(tmp_path, "state", env)
    assert_no_plaintext(all_bytes_local(tmp_path / "state", tmp_path / "out"))
    os.environ["TIMELAPSE_KEY"] = KEY
    try:
        check_results(str(tmp_path / "out"), data, str(tmp_path / "state"))
    finally:
        os.environ.pop("TIMELAPSE_KEY", None)
        forget_keys()
    # a wrong key: one line, exit 2
    wrong = timelapse(tmp_path, "run", "pipeline.sql", "--state", "state", "--once", "--quiet",
                      env=key_env(secrets.token_hex(32)))  # fmt: skip
    assert wrong.returncode == 2, wrong.stderr
    assert wrong.stderr.strip().count("\n") == 0 and "wrong key" in wrong.stderr, wrong.stderr
    missing = timelapse(tmp_path, "run", "pipeline.sql", "--state", "state", "--once", "--quiet",
                        env={k: v for k, v in key_env().items() if k != "TIMELAPSE_KEY"})  # fmt: skip
    assert missing.returncode == 2 and "not set" in missing.stderr, missing.stderr


# -- on S3: server-side encryption everywhere, and no plaintext in any object ----------------------------------
def objects(s3, bucket: str) -> list[tuple[str, bytes]]:  # type: ignore[no-untyped-def]
    return [(k, s3.client.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in s3.keys(bucket)]


@pytest.mark.parametrize("kind", ["AES256", pytest.param("aws:kms", marks=pytest.mark.slow)])
def test_s3_pipeline_sse_and_sealed_columns(s3, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    bucket = s3.bucket()
    data = write_input(tmp_path / "payments")
    # State and Delta sinks in the bucket; the input files stay local.
    out = f"s3://{bucket}/out"
    (tmp_path / "pipeline.sql").write_text(SQL.format(src="payments", out=out))
    sse = {"AWS_SERVER_SIDE_ENCRYPTION": kind}
    if kind == "aws:kms":
        sse["AWS_SSE_KMS_KEY_ID"] = s3.kms_key()
    env = {**key_env(), **s3.env(), **sse}
    state = f"s3://{bucket}/state"
    run_pipeline(tmp_path, state, env, crash_at="sink.commit.after:2")
    run_pipeline(tmp_path, state, env)
    saved = timelapse(tmp_path, "savepoint", "create", state, "--name", "before", env=env)
    assert saved.returncode == 0, saved.stderr
    branched = timelapse(tmp_path, "branch", state, f"s3://{bucket}/branch", "--from", "savepoint", "before", env=env)
    assert branched.returncode == 0, branched.stderr
    keys = s3.keys(bucket)
    for part in ("state/pipeline.json", "state/lease.json", "state/manifest/", "state/offsets/",
                 "state/dead_letters/", "state/operators/", "state/branches/", "branch/", "out/"):  # fmt: skip
        assert any(k.startswith(part) for k in keys), part
    unencrypted = [k for k in keys if s3.head(bucket, k).get("ServerSideEncryption") != kind]
    assert not unencrypted, unencrypted[:5]
    if kind == "aws:kms":
        wrong_key = [k for k in keys if sse["AWS_SSE_KMS_KEY_ID"] not in s3.head(bucket, k).get("SSEKMSKeyId", "")]
        assert not wrong_key, wrong_key[:5]
    assert_no_plaintext(objects(s3, bucket))
    assert not (tmp_path / "s3:").exists()
    os.environ["TIMELAPSE_KEY"] = KEY
    try:
        check_results(out, data, state)
    finally:
        os.environ.pop("TIMELAPSE_KEY", None)
        forget_keys()
