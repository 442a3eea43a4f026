"""Loading the Python code `CREATE FUNCTION f AS 'module.fn' LANGUAGE PYTHON` names (the planner's import hook).

Flink's rule is that the module must be importable; here that means the pipeline's folder (the .sql file's
folder, searched first) or the Python path. Importing a module runs its top-level code, so SQL that names a
module can run code: what keeps that inside the operator's control:
- the class name is a dotted Python name (checked by the planner), never a file path, so SQL cannot point the
  import at an arbitrary file (`../../tmp/x.py`, `/etc/...`); only code already placed in the pipeline's folder
  or installed on the Python path by whoever runs the pipeline is importable;
- with allowed roots configured (`TIMELAPSE_ALLOWED_ROOTS`, `timelapse run --allowed-root`: the confinement that
  keeps every connector path inside its roots), the module's file must also lie in the pipeline's folder or an
  allowed root, checked from its location before it is imported, so a module elsewhere on the Python path
  (the standard library, site-packages) is refused without running any of its code;
- the standard library holds no UDFs, and importing some of it acts (`antigravity` opens a web browser): a module
  of it is refused by name, before anything is imported;
- the object found must be a UDF (`sql/python_functions.py` judges it): naming `os.system` is refused; a plain
  function with type hints (called per row) must be defined in the pipeline's folder or an allowed root: elsewhere
  on the Python path only objects written to be called from SQL (`@udf`, `udaf(...)`) are taken, since an
  installed package's typed function (`click.launch(url: str) -> int` starts a program) was not.
The pipeline's folder is on `sys.path` only while the import runs. Imported modules stay in `sys.modules`, as
any import does (a second pipeline in the same process naming the same module gets the same one).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import threading
from functools import partial
from pathlib import Path

from engine import paths
from sql.python_functions import FunctionLoader
from sql.udf import UDF_ATTRIBUTE, ScalarUdf

_IMPORTING = threading.Lock()  # sys.path is process-wide


def loader(base_dir: str | Path) -> FunctionLoader:
    """The import hook for a pipeline whose SQL lives in `base_dir` (a picklable partial, for scale-out workers)."""
    return partial(load, str(Path(base_dir).resolve()))


def load(base_dir: str, module: str, attribute: str) -> object:
    """`module.attribute`, imported from `base_dir` or the Python path; LookupError (one line) if it cannot be."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names:
        raise LookupError(
            f"'{module}' is in Python's standard library, which holds no SQL functions; importing is refused "
            "(a module of the pipeline's folder named like one must be renamed)"
        )
    with _IMPORTING:
        sys.path.insert(0, base_dir)
        try:
            _check_roots(base_dir, module)
            try:
                imported = importlib.import_module(module)
            except ModuleNotFoundError as err:
                raise LookupError(
                    f"no module named '{err.name or module}' in the pipeline's folder ({base_dir}) or on the "
                    "Python path"
                ) from None
            except Exception as err:  # its top-level code failed
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                raise LookupError(f"importing '{module}' failed: {type(err).__name__}: {first}") from None
        finally:
            if base_dir in sys.path:  # (unless the module's own code took it out)
                sys.path.remove(base_dir)
    try:
        found = getattr(imported, attribute)
    except AttributeError:
        raise LookupError(f"module '{module}' has no '{attribute}'") from None
    if inspect.isfunction(found) and not isinstance(getattr(found, UDF_ATTRIBUTE, None), ScalarUdf):
        _check_plain_function(base_dir, found, f"{module}.{attribute}")
    return found


def _check_plain_function(base_dir: str, function: object, name: str) -> None:
    """A plain (unmarked) function is not taken from the Python path (the standard library, site-packages,
    PYTHONPATH): only from the pipeline's folder or an allowed root (or a pipeline folder an earlier import in this
    process loaded it from, which is on no path)."""
    where = Path(function.__code__.co_filename)  # type: ignore[attr-defined]
    if not where.is_absolute():
        return  # code compiled from a string (exec): not a file of the Python path
    where = where.resolve()
    own = [Path(base_dir), *(r for r in paths.allowed_roots() if isinstance(r, Path))]
    if any(where.is_relative_to(root) for root in own):
        return
    path = [Path(entry or ".").resolve() for entry in sys.path]
    if not any(where.is_relative_to(entry) for entry in path):
        return
    raise LookupError(
        f"'{name}' is a plain function defined outside the pipeline's folder ({where}); from the Python path only "
        "a function marked @udf(<result type>) or an aggregate made by udaf(...) is taken (wrap it in a module "
        "beside the .sql file to call it per row)"
    )


def _check_roots(base_dir: str, module: str) -> None:
    """With allowed roots configured, the module's top-level package must come from the pipeline's folder or a
    root; found before anything is executed (locating a top-level module runs none of its code)."""
    roots = paths.allowed_roots()
    if not roots:
        return
    top = module.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return  # import_module says it is not there
    origin = spec.origin if spec.origin not in (None, "built-in", "frozen") else None
    locations = [Path(origin)] if origin else [Path(p) for p in (spec.submodule_search_locations or [])]
    allowed = [Path(base_dir), *(r for r in roots if isinstance(r, Path))]
    if locations and all(any(loc.resolve().is_relative_to(root) for root in allowed) for loc in locations):
        return
    where = str(locations[0]) if locations else "built into Python"
    raise LookupError(
        f"module '{top}' ({where}) is outside the pipeline's folder and the allowed roots "
        f"({paths.ROOTS_VARIABLE}); with roots configured only modules inside them may be imported"
    )
