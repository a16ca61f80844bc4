"""A study's identity: everything that changes what one of its trials means, fingerprinted when
the study is created and checked on every resume and by every worker.

The fingerprint holds the architecture list and encoding, the search space, the model variant,
and (``identity``) the data's content hash and every data, split, task, fixed model and fixed
training key. Keys that change how a trial runs but not what it means are left out
(:data:`RUN_ONLY_TRAINING`). A mismatch is one error listing each changed key as ``old -> new``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import attrs
import optuna

from archsearch.config import Config
from archsearch.data.sources import BUILTIN_PREFIX, SYNTHETIC, builtin_path
from archsearch.errors import ArchsearchError
from archsearch.records import STUDY_ATTR, fingerprint_of, write_fingerprint
from archsearch.search.matrix import Cell
from archsearch.space.encodings import Encoding, make_encoding

log = logging.getLogger("archsearch")
#: Training keys that say where and how fast a trial runs, not what it is: a resume may change them.
RUN_ONLY_TRAINING = ("device", "cpu_threads", "micro_batch_size", "cuda_graphs", "compile", "seed")


def fingerprint(config: Config, cell: Cell, encoding: Encoding) -> dict[str, Any]:
    return {
        "encoding": encoding.describe(),
        "training_search_space": {k: v.as_dict() for k, v in sorted(config.training_search_space.items())},
        "model": config.model.variant,
        "identity": identity(config),
    }


def identity(config: Config) -> dict[str, Any]:
    """Flat ``section.key -> value``: the data's content, then every key of ``data`` (but its path),
    ``split``, ``task``, ``model`` (but the variant and a fixed architecture, recorded apart) and
    the fixed (not searched) ``training`` keys other than :data:`RUN_ONLY_TRAINING`."""
    skip_training = RUN_ONLY_TRAINING + tuple(config.training_search_space)
    return {
        "data.content": data_digest(config.data.source),
        **_section("data", config.data, ("source",)),
        **_section("split", config.split),
        **_section("task", config.task),
        **_section("model", config.model, ("variant", "architecture")),
        **_section("training", config.training, skip_training),
    }


def _section(name: str, value: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    plain = json.loads(json.dumps(attrs.asdict(value), default=str))  # tuples as lists, as stored
    return {f"{name}.{k}": v for k, v in plain.items() if k not in skip}


def data_digest(source: str) -> str:
    """``sha256:<hex>`` of the data file's bytes (``synthetic``: the generator's keys say it all);
    hashed once per process for a file of the same size and modification time."""
    if source == SYNTHETIC:
        return SYNTHETIC
    if source.startswith(BUILTIN_PREFIX):  # a data set shipped with the package
        with builtin_path(source) as builtin:
            return data_digest(str(builtin))
    path = Path(source).resolve()
    stat = path.stat()
    return _digest(path, stat.st_size, stat.st_mtime_ns)


@functools.cache
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


def check_unchanged(study: optuna.Study, expected: dict[str, Any]) -> None:
    """A study keeps its identity: the first process records it, every later one compares."""
    stored = fingerprint_of(study)
    if stored is None:
        if study.get_trials(deepcopy=False):
            return  # a study made by hand or by a much older version: nothing to compare
        write_fingerprint(study, expected)
        return
    changes = differences(stored, expected)
    if changes:
        raise ArchsearchError(mismatch_message(study.study_name, changes))
    if "identity" not in stored:
        log.warning(
            "study %r was created by an earlier archsearch that did not record its data and settings; "
            "they are recorded now and checked from here on",
            study.study_name,
        )
        write_fingerprint(study, expected)


def check_stored(config: Config, cells: list[Cell], storage: optuna.storages.BaseStorage) -> None:
    """Every cell study already in the storage against this config, before any trial runs (so a
    mismatch in the last cell writes nothing in the first)."""
    for cell in cells:
        try:
            study_id = storage.get_study_id_from_name(cell.study_name)
        except KeyError:
            continue
        stored = storage.get_study_user_attrs(study_id).get(STUDY_ATTR)
        if stored is not None:
            encoding = make_encoding(config.architecture.encoding, cell.architectures)
            changes = differences(stored, fingerprint(config, cell, encoding))
            if changes:
                raise ArchsearchError(mismatch_message(cell.study_name, changes))


def mismatch_message(study_name: str, changes: list[str]) -> str:
    return (
        f"study {study_name!r} in the storage was created with another search: {'; '.join(changes)}. "
        "Resume it with the config it was started with (and the same data), or give this search a new "
        "experiment name (or output_dir/storage); nothing was written."
    )


def differences(stored: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Each changed key as ``key: old -> new`` (keys the stored fingerprint lacks are not compared:
    a key added by a later archsearch defaults to what it did before)."""
    changes = _architecture_change(stored, expected)
    old_ts, new_ts = stored.get("training_search_space", {}), expected["training_search_space"]
    for key in sorted(set(old_ts) | set(new_ts)):
        if old_ts.get(key) != new_ts.get(key):
            changes.append(f"training_search_space.{key}: {old_ts.get(key)} -> {new_ts.get(key)}")
    if stored.get("encoding", {}).get("name") != expected["encoding"]["name"]:
        changes.append(f"encoding: {stored['encoding'].get('name')} -> {expected['encoding']['name']}")
    if stored.get("model") != expected["model"]:
        changes.append(f"model.variant: {stored.get('model')} -> {expected['model']}")
    old_id, new_id = stored.get("identity"), expected["identity"]
    if old_id is not None:  # keys added by a later archsearch are not compared: they keep old behaviour
        for key in sorted(old_id):
            if old_id.get(key) != new_id.get(key):
                changes.append(
                    f"{key}: {_shown(old_id.get(key, 'not set'))} -> {_shown(new_id.get(key, 'not set'))}"
                )
    return changes


def _architecture_change(stored: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    old_arch = stored.get("encoding", {}).get("architectures", [])
    new_arch = expected["encoding"]["architectures"]
    if old_arch == new_arch:
        return []
    added = [a for a in new_arch if a not in old_arch]
    removed = [a for a in old_arch if a not in new_arch]
    return [
        f"the architecture list changed ({len(old_arch)} -> {len(new_arch)}; "
        f"added {added[:5] or 'none'}{'...' if len(added) > 5 else ''}, "
        f"removed {removed[:5] or 'none'}{'...' if len(removed) > 5 else ''})"
    ]


def _shown(value: Any) -> str:
    if isinstance(value, str) and value.startswith("sha256:"):
        return f"content {value[7:19]}"
    return repr(value) if isinstance(value, str) else str(value)
