"""Read a checkpoint file without running code from it, and one clear line for every way a file can
be wrong (missing, a directory, empty, truncated, not a checkpoint, weights that need code), with
torch's own warnings kept off the user's terminal.

Files are read with ``torch.load(..., weights_only=True)`` first. A training checkpoint often holds
more than weights: mmengine's runner (MMAction2's ``work_dirs/<config>/epoch_N.pth``, ``best_*.pth``)
saves ``meta``, ``state_dict``, ``message_hub`` (mmengine ``HistoryBuffer`` objects holding numpy
arrays), ``optimizer`` and ``param_schedulers``, and ``weights_only`` refuses the whole file for the
first class it does not know. Only then is the file read again by :class:`TolerantUnpickler`: torch's
tensor rebuilding (exactly the globals ``weights_only`` allows) works as usual; every other global
becomes a :class:`StandIn`, an inert placeholder that records how the file would have built the
object (constructor arguments, ``__setstate__`` state, appended items) and never imports, calls or
runs anything of it. The weights (``obj["state_dict"]``, or the file itself for a bare state dict)
must be free of stand-ins, else the file is refused; stand-ins elsewhere are removed and logged.
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import io
import logging
import pickle
import re
import types
import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from ..errors import TsmDeployError, one_line

log = logging.getLogger(__name__)

WEIGHTS_KEY = "state_dict"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------- stand-ins


class StandIn:
    """An object of a class (or the result of a function) the file names and this reader does not
    trust. Its class is made here, named after the global (``global_name``); the real one is never
    imported. What the pickle would have passed is recorded, nothing of it is executed."""

    global_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "StandIn":
        obj = object.__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None, items=[], entries=[])
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # construction already recorded
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def append(self, item: Any) -> None:
        self.__dict__["items"].append(item)

    def extend(self, items: Any) -> None:
        self.__dict__["items"].extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__["entries"].append((key, value))

    def __repr__(self) -> str:
        return f"<not loaded: {self.global_name}>"


class TolerantUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` returns torch's allowed globals (those
    ``weights_only=True`` allows, plus any the user registered with ``add_safe_globals``) and a
    :class:`StandIn` subclass for everything else. Used through ``torch.load(pickle_module=...)``,
    so torch's own storage loading (``persistent_load``) stays in place."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 era names (``__builtin__.set``), as pickle.Unpickler maps them for protocols < 3
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        allowed = _allowed_globals()
        if full in allowed:
            return allowed[full]
        cache = self.__dict__.setdefault("_stand_ins", {})
        if full not in cache:
            cache[full] = type("StandIn", (StandIn,), {"global_name": full, "__module__": __name__})
        return cache[full]


def _allowed_globals() -> dict[str, Any]:
    from torch import _weights_only_unpickler as wo

    allowed = dict(wo._get_allowed_globals())
    user = getattr(wo, "_get_user_allowed_globals", None)
    if user is not None:
        allowed.update(user())
    return allowed


def _tolerant_load(file: Any, **kwargs: Any) -> Any:
    return TolerantUnpickler(file, **kwargs).load()


# what torch.load needs of a pickle module: Unpickler (subclassed by torch) and load (legacy files)
TOLERANT_PICKLE = types.SimpleNamespace(Unpickler=TolerantUnpickler, load=_tolerant_load, __name__="tolerant_pickle")


def _children(obj: Any) -> Iterator[Any]:
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            yield key
            yield value
    elif isinstance(obj, (list, tuple, set, frozenset)):
        yield from obj
    elif isinstance(obj, torch.Tensor):
        yield from getattr(obj, "__dict__", {}).values()  # python attributes a rebuild may have set
    if not isinstance(obj, StandIn) and hasattr(obj, "__dict__") and not isinstance(obj, (type, torch.Tensor)):
        yield from vars(obj).values()  # e.g. an OrderedDict's _metadata


def stand_ins(obj: Any) -> list[StandIn]:
    """Every stand-in in ``obj`` (containers walked, cycles safe); their own arguments not looked into."""
    found, seen, todo = [], set(), [obj]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, StandIn) or (isinstance(item, type) and issubclass(item, StandIn)):
            found.append(item)
            continue
        todo.extend(_children(item))
    return found


def _prune(obj: Any, removed: list[str]) -> Any:
    """``obj`` without its stand-ins: dictionary entries holding one are dropped (nested dictionaries
    pruned the same way); any other container holding one is dropped whole."""
    if isinstance(obj, Mapping) and type(obj) in (dict, OrderedDict):
        kept = type(obj)()
        for key, value in obj.items():
            if not stand_ins(value) and not stand_ins(key):
                kept[key] = value
            elif isinstance(value, Mapping) and not stand_ins(key):
                kept[key] = _prune(value, removed)
            else:
                removed.extend(s.global_name for s in stand_ins(value) + stand_ins(key))
        return kept
    removed.extend(s.global_name for s in stand_ins(obj))
    return None


@dataclass(frozen=True)
class StandInReport:
    """What the tolerant reader left out, by top-level entry: entry -> Counter of global names."""

    by_entry: dict[str, Counter] = field(default_factory=dict)

    def describe(self) -> str:
        return "; ".join(
            f"{entry}: " + ", ".join(f"{n} x {name}" for name, n in sorted(counts.items()))
            for entry, counts in self.by_entry.items()
        )


def _names(found: list[Any]) -> str:
    names = sorted({s.global_name for s in found})
    return ", ".join(names[:3]) + (f" ...and {len(names) - 3} more" if len(names) > 3 else "")


def sanitise(obj: Any, path: Path) -> tuple[Any, StandInReport]:
    """Refuse ``obj`` if its weights hold stand-ins; else ``obj`` with every stand-in removed."""
    if isinstance(obj, StandIn) or (isinstance(obj, type) and issubclass(obj, StandIn)):
        raise TsmDeployError(f"refusing to load {path}: the file is a {obj.global_name} object, not a state dict "
                             "(loading it would run code)")
    weights = obj.get(WEIGHTS_KEY) if isinstance(obj, Mapping) and WEIGHTS_KEY in obj else obj
    found = stand_ins(weights)
    if found:
        where = f"its weights ('{WEIGHTS_KEY}')" if weights is not obj else "its state dict"
        raise TsmDeployError(f"refusing to load {path}: {where} reference {_names(found)}, not only tensors and "
                             "plain containers (loading them would run code)")
    if not isinstance(obj, Mapping):
        return obj, StandInReport()
    report: dict[str, Counter] = {}
    clean = type(obj)() if type(obj) in (dict, OrderedDict) else {}
    for key, value in obj.items():
        removed: list[str] = []
        if stand_ins(key):
            removed = [s.global_name for s in stand_ins(key) + stand_ins(value)]
        elif key == WEIGHTS_KEY or not stand_ins(value):
            clean[key] = value
        else:
            pruned = _prune(value, removed)
            if pruned is not None:
                clean[key] = pruned
        if removed:
            report[key if isinstance(key, str) and key.isprintable() else repr(key)[:40]] = Counter(removed)
    return clean, StandInReport(report)


# ------------------------------------------------------------------------------------------ reading


def _torch_load(data: bytes, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about legacy/odd files before it fails on them
        return torch.load(io.BytesIO(data), map_location="cpu", **kwargs)


def _unreadable(path: Path, exc: BaseException) -> TsmDeployError:
    return TsmDeployError(
        f"cannot read checkpoint {path}: not a PyTorch checkpoint or truncated ({type(exc).__name__}: {one_line(exc)[:120]})"
    )


def read_checkpoint_file(path: Path) -> tuple[Any, str]:
    """-> (the unpickled object: tensors and plain containers only, sha256 of the file).

    ``weights_only=True`` first; when that refuses a global, the :class:`TolerantUnpickler` (see the
    module's docstring): what it turned into stand-ins outside the weights is removed and logged."""
    path = Path(path)
    if not path.exists():
        raise TsmDeployError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise TsmDeployError(f"checkpoint is not a file: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TsmDeployError(f"cannot read checkpoint {path}: {exc.strerror or type(exc).__name__}") from None
    if not data:
        raise TsmDeployError(f"cannot read checkpoint {path}: the file is empty")
    try:
        return _torch_load(data, weights_only=True), sha256_bytes(data)
    except pickle.UnpicklingError as exc:
        blocked = re.search(r"GLOBAL (\S+)", str(exc))
        if not blocked:
            raise TsmDeployError(f"cannot read checkpoint {path}: not a PyTorch checkpoint or truncated") from None
        log.info("%s references %s, which weights_only refuses: reading it again with placeholders for "
                 "everything that is not a tensor (nothing of it is run)", path, blocked.group(1))
    except Exception as exc:  # noqa: BLE001 - torch raises KeyError/RuntimeError/EOFError/... on garbage
        raise _unreadable(path, exc) from None
    try:
        obj = _torch_load(data, weights_only=False, pickle_module=TOLERANT_PICKLE)
    except Exception as exc:  # noqa: BLE001 - a stand-in used where torch expects a real object, garbage...
        raise _unreadable(path, exc) from None
    obj, report = sanitise(obj, path)
    if report.by_entry:
        log.info("%s: left out what is not weights and would need code to load (not loaded, never run): %s",
                 path, report.describe())
    return obj, sha256_bytes(data)
