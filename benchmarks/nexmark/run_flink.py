"""One Nexmark query on Flink SQL (PyFlink, local mini-cluster): `python -m benchmarks.nexmark.run_flink Q DATA ...`.

Runs under the Flink virtual environment (`python -m benchmarks.nexmark setup-flink`): apache-flink pins an old
pyarrow that timelapse cannot share, so it lives apart. Alignment with timelapse (see benchmarks/README.md):
streaming mode, parallelism = all cores, exactly-once checkpoints every second, the same query texts (they are
Flink SQL), the same events read from CSV copies of the files (the pip package ships no Parquet format), and the
`blackhole` sink. The mini-cluster is started and warmed up by a trivial job first; the timed job runs until
the bounded files are consumed. Flink has no micro-batches, so there is no epoch latency to report.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from benchmarks.nexmark.measure import PeakMemory, cli, result, unsupported

HERE = Path(__file__).parent
UNSUPPORTED = {
    "q13": "the files cannot be a lookup table in Flink: its filesystem connector is not a lookup source",
}


def flink_script(query: str, csv: Path) -> str:
    sources = (HERE / "sources.sql").read_text()
    text = (HERE / f"{query}.sql").read_text()
    sources = sources.replace("${PROCTIME}", "p_time AS PROCTIME(),\n  " if "p_time" in text else "")
    sources = re.sub(
        r"\$\{SOURCE:(\w+)\}",
        lambda m: f"'connector' = 'filesystem', 'path' = '{csv / m.group(1)}', 'format' = 'csv'",
        sources,
    )
    text = re.sub(r"\$\{SINK(?::[^}]*)?\}", "'connector' = 'blackhole'", text)
    # DATETIME is a keyword in Flink 2's parser: quote the column (the same name in timelapse needs no quotes).
    return re.sub(r"\bdateTime\b", "`dateTime`", sources + "\n" + text)


def main(query: str, data: Path, events: int, epoch_events: int) -> dict[str, object]:
    if query in UNSUPPORTED:
        return unsupported("flink", query, UNSUPPORTED[query])
    from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment
    from pyflink.table.udf import udf

    memory = PeakMemory().start()
    cores = os.cpu_count() or 1
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = env.get_config()
    config.set("parallelism.default", str(cores))
    config.set("execution.checkpointing.interval", "1 s")
    config.set("execution.checkpointing.mode", "EXACTLY_ONCE")
    config.set("table.local-time-zone", "UTC")

    @udf(result_type=DataTypes.BIGINT())
    def count_char(text: str, char: str) -> int:
        return text.count(char)

    env.create_temporary_function("count_char", count_char)
    env.execute_sql("CREATE TABLE warm (x INT) WITH ('connector' = 'blackhole')")
    env.execute_sql("INSERT INTO warm SELECT 1").wait()  # start the mini-cluster before timing

    text = "\n".join(
        line for line in flink_script(query, data / "csv").splitlines() if not line.strip().startswith("--")
    )
    statements = [s.strip() for s in text.split(";") if s.strip()]
    started = time.perf_counter()
    try:
        submitted = None
        for statement in statements:
            body = "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--")).strip()
            if not body:
                continue
            submitted = env.execute_sql(body)
        if submitted is not None:
            submitted.wait()
    except Exception as err:  # Flink cannot plan or run it: record why
        memory.stop()
        message = str(err).strip().splitlines()
        return unsupported(
            "flink", query, next((m for m in message if "Exception:" in m or "not supported" in m), message[0])
        )
    elapsed = time.perf_counter() - started
    memory.stop()
    return result("flink", query, events, elapsed, elapsed, [], [], memory.peak)


if __name__ == "__main__":
    cli(main)
