"""`CREATE [TEMPORARY [SYSTEM]] FUNCTION [IF NOT EXISTS] f AS 'module.fn' LANGUAGE PYTHON`.

The planner checks the statement and asks the engine's loader (injected into `plan_script`, since importing is
code loading and `sql/` does none) for the object; `sql/python_functions.py` judges it. The function is
callable by the statements after it, as Flink's temporary functions are."""

from __future__ import annotations

from sqlglot import exp

from sql.errors import UnsupportedError, error_at
from sql.planner.binder import Binder
from sql.python_functions import NotAFunction, as_function, split_class_name
from sql.udf import AggregateUdf


def create(binder: Binder, statement: exp.Create) -> None:
    name = statement.this.name
    key = name.upper()
    definition = statement.expression
    if not (isinstance(definition, exp.Literal) and definition.is_string):
        raise error_at(statement, f"CREATE FUNCTION {name}: AS 'module.function' LANGUAGE PYTHON expected")
    _check_language(statement, name)
    if key in binder.created_functions:
        if statement.args.get("exists"):
            return
        raise error_at(statement.this, f"function '{name}' is already defined (CREATE FUNCTION IF NOT EXISTS skips it)")
    try:
        module, attribute = split_class_name(definition.name)
    except NotAFunction as err:
        raise error_at(definition, f"CREATE FUNCTION {name}: {err}") from None
    if binder.function_loader is None:
        raise error_at(
            statement,
            f"CREATE FUNCTION {name}: Python functions are loaded by the engine; plan through timelapse or "
            "engine.Pipeline.from_sql",
            UnsupportedError,
        )
    try:
        function = as_function(key, binder.function_loader(module, attribute), definition.name)
    except (LookupError, NotAFunction) as err:
        raise error_at(definition, f"CREATE FUNCTION {name}: {str(err).strip()}") from None
    binder.created_functions.add(key)
    if isinstance(function, AggregateUdf):
        binder.udafs[key] = function
        binder.udfs.pop(key, None)
    else:
        binder.udfs[key] = function
        binder.udafs.pop(key, None)


def drop(binder: Binder, statement: exp.Drop) -> None:
    """DROP [TEMPORARY [SYSTEM]] FUNCTION [IF EXISTS] f: a function the script created."""
    for table in statement.args.get("tables") or []:
        key = table.name.upper()
        if key in binder.created_functions:
            binder.created_functions.discard(key)
            binder.udfs.pop(key, None)
            binder.udafs.pop(key, None)
        elif not statement.args.get("exists"):
            raise error_at(table, f"DROP FUNCTION: no function '{table.name}' was created by CREATE FUNCTION")


def _check_language(statement: exp.Create, name: str) -> None:
    properties = statement.args.get("properties")
    languages = [p for p in (properties.expressions if properties else []) if isinstance(p, exp.LanguageProperty)]
    language = languages[0].name.upper() if languages else None
    if language == "PYTHON":
        return
    if language is None:
        raise error_at(
            statement,
            f"CREATE FUNCTION {name}: add LANGUAGE PYTHON (Flink's default language is JAVA, and timelapse runs "
            "Python functions only)",
            UnsupportedError,
        )
    raise error_at(
        languages[0],
        f"CREATE FUNCTION {name}: LANGUAGE {language} is not supported: timelapse has no JVM to load a "
        f"{language.title()} class; write the function in Python (LANGUAGE PYTHON)",
        UnsupportedError,
    )
