"""The documentation cannot drift from the code: every config key is in docs/config.md (and every
key there exists), and every hook is named in docs/plugins.md."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import attrs
import pytest

from archsearch.config import SEARCHABLE, Config
from archsearch.plugin import spec as hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs"
ROW = re.compile(r"^\|\s*`([A-Za-z0-9_]+)`\s*\|", re.M)
TOP = "Top-level keys"


def sections_of(cls: type, path: str = "") -> dict[str, type]:
    """Each configuration section (its dotted key) and the attrs class it is read into, found by
    walking the types of ``Config``, so that a new section cannot go undocumented either."""
    out = {path: cls}
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        if not field.init:
            continue
        for inner in _types_in(hints[field.name]):
            if attrs.has(inner):
                out.update(sections_of(inner, f"{path}.{field.name}" if path else field.name))
    return out


def _types_in(tp: typing.Any) -> list[typing.Any]:
    found = [tp]
    for arg in typing.get_args(tp):
        found += _types_in(arg)
    return found


def keys_of(cls: type) -> set[str]:
    return {f.name for f in attrs.fields(cls) if f.init}


def documented_sections() -> dict[str, str]:
    """The text of each ``## `key` `` section of docs/config.md (the top-level keys under "")."""
    text = (DOCS / "config.md").read_text()
    out: dict[str, str] = {}
    for chunk in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, _, body = chunk.partition("\n")
        if heading.strip() == TOP:
            out[""] = body
            continue
        match = re.match(r"`([A-Za-z0-9_.]+)`", heading.strip())
        assert match, f"docs/config.md: heading {heading!r} names no section in backticks"
        out[match.group(1)] = body
    return out


SECTIONS = sections_of(Config)


def test_the_walk_finds_every_section():
    assert {"", "data", "task", "split", "model", "model.architecture", "architecture", "training"} <= set(
        SECTIONS
    )
    assert {"training_search_space", "sampler", "pruner", "allocation"} <= set(SECTIONS)


@pytest.mark.parametrize("section", sorted(SECTIONS), ids=lambda s: s or "top-level")
def test_config_md_documents_every_key_of_the_section(section):
    docs = documented_sections()
    assert section in docs, f"docs/config.md has no section for {section or 'the top-level keys'}"
    documented = ROW.findall(docs[section])
    expected = keys_of(SECTIONS[section])
    if section == "training_search_space":  # the searchable parameters, then a range's keys
        expected |= set(SEARCHABLE)
    missing = expected - set(documented)
    unknown = set(documented) - expected
    assert not missing, f"docs/config.md, section {section or TOP!r}: undocumented keys {sorted(missing)}"
    assert not unknown, (
        f"docs/config.md, section {section or TOP!r}: keys that do not exist {sorted(unknown)}"
    )
    assert len(documented) == len(set(documented)), f"a key of {section or TOP!r} is documented twice"


def test_config_md_has_no_section_for_a_class_that_does_not_exist():
    assert set(documented_sections()) <= set(SECTIONS)


def test_every_row_gives_type_default_example_and_meaning():
    for section, body in documented_sections().items():
        for line in body.splitlines():
            if ROW.match(line):
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                assert len(cells) >= 5 and all(cells[:5]), f"{section or TOP}: incomplete row {line!r}"


def hook_names() -> set[str]:
    return {
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("archsearch_") and hasattr(fn, "archsearch_spec")
    }


def test_every_hook_is_documented_in_plugins_md():
    text = (DOCS / "plugins.md").read_text()
    hooks = hook_names()
    assert hooks, "no hook specifications found in archsearch/hookspecs.py"
    missing = sorted(h for h in hooks if h not in text)
    assert not missing, f"docs/plugins.md does not name the hooks {missing}"
    named = set(re.findall(r"\b(archsearch_[a-z_]+)\(", text))
    assert named <= hooks, f"docs/plugins.md names hooks that do not exist: {sorted(named - hooks)}"
