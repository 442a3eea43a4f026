"""What the Kafka source and sink share: the client library, its configuration from a table's options, and its
errors and log lines turned into the product's.

confluent-kafka (librdkafka) is in the `kafka` extra; a pipeline naming a Kafka table without it installed
fails with the install command, not an ImportError. librdkafka logs to stderr by default: every client here
logs to the `timelapse.kafka` logger instead, so no raw client text reaches the user.
"""

from __future__ import annotations

import logging
from typing import Any

from engine.errors import UserError
from sql.catalog import TableDef

LOG = logging.getLogger("timelapse.kafka")
LOG.addHandler(logging.NullHandler())
LOG.propagate = False


class KafkaUnavailable(UserError):
    """The `kafka` extra is not installed."""


def client_module() -> Any:
    """The confluent_kafka module, or a one-line user error saying how to install it."""
    try:
        import confluent_kafka
    except ImportError:
        raise KafkaUnavailable(
            "Kafka tables need the kafka extra: pip install 'timelapse[kafka]' (confluent-kafka)"
        ) from None
    return confluent_kafka


def client_config(table: TableDef, **overrides: Any) -> dict[str, Any]:
    """The librdkafka configuration of `table`: its `properties.*` options, unprefixed, then `overrides`
    (what the engine must decide itself, such as isolation level or transactional id), and the logger."""
    config: dict[str, Any] = {
        key.removeprefix("properties."): value
        for key, value in table.options.items()
        if key.startswith("properties.") and key != "properties.group.id"
    }
    config.update(overrides)
    config["logger"] = LOG
    return config


def group_id(table: TableDef) -> str | None:
    return table.options.get("properties.group.id")


def describe(table: TableDef, err: Any) -> str:
    """One line for a client error: the table, the bootstrap servers and the client's reason."""
    reason = err.str() if hasattr(err, "str") else str(err)
    servers = table.options.get("properties.bootstrap.servers", "?")
    return f"table '{table.name}'{table.where()}: Kafka at {servers}: {reason}"
