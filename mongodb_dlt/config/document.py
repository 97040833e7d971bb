"""The YAML file as plain values that remember where they were written, and every problem found in it.

PyYAML composes the file into nodes (in C when it can); one walk over them makes the plain values and notes the
line of every key and list item under its dotted path, so any problem, pydantic's included, names the file, the
line and the key the user typed. Keys keep their text (``2021:`` and ``on:`` stay strings), a key given twice
is a problem (PyYAML would keep the last without a word), and a value from the environment is named by its
variable, never shown. ``Document.validate`` words pydantic's errors for the person editing the YAML.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mongodb_dlt.config.env import interpolate, interpolation_problem
from mongodb_dlt.config.models import (
    CollectionOptions,
    DatabaseSection,
    DefaultsSection,
    DestinationConfig,
    show_value,
)
from mongodb_dlt.config.rules import did_you_mean
from mongodb_dlt.errors import ConfigError

YamlPath = tuple[str | int, ...]

_LITERAL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:(?P<password>[^@/]+)@")
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
# The plain values repeat an anchor's whole content at each of its aliases (and note a line for every copy), so
# aliases inside anchors multiply: nine levels of ten ("billion laughs") make 10**9 values and exhaust memory.
# The 100 databases x 50 collections of benchmarks/definitions_load.py are 16,407 values (3.3 a collection);
# 5,000 collections that each spell out a filter, a projection, tags and an incremental cursor are about 40 a
# collection, 200,000 in all. Five times that leaves room for any real map, anchors for shared options
# included; measured here, 955,000 values (5,000 collections of 190) load in 3.2 s and 0.5 GB.
MAX_YAML_VALUES = 1_000_000


def dotted(path: YamlPath) -> str:
    """A key path as messages name it: ``databases.shop.collections[2]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class _Frame:
    """An open mapping or list while ``Document._check_aliases`` reads the parser's events."""

    __slots__ = ("anchor", "children", "key", "mapping", "start")

    def __init__(self, anchor: str | None, start: int, mapping: bool) -> None:
        self.anchor, self.start, self.mapping = anchor, start, mapping
        self.children = 0
        self.key: str | int = ""  # of a mapping, the last key (its text); of a list, the last item's index

    def enter(self, event: yaml.NodeEvent) -> None:
        """Notes that ``event`` starts this mapping's or list's next key, value or item."""
        if not self.mapping:
            self.key = self.children
        elif self.children % 2 == 0:
            self.key = event.value if isinstance(event, yaml.ScalarEvent) else ""
        self.children += 1


def _entered_path(frames: Sequence[_Frame]) -> YamlPath:
    """The path of the node the innermost frame just entered; a key (or what is inside one) counts as its mapping."""
    path: list[str | int] = []
    for frame in frames:
        if frame.mapping and frame.children % 2 == 1:
            break
        if frame.key != "":
            path.append(frame.key)
    return tuple(path)


class Document:
    """The YAML file as plain values, the line of every key and list item, and the problems found so far."""

    def __init__(self, path: Path, section: YamlPath = ()) -> None:
        self.path = path
        # Where the config sits in the file: () for a databases.yaml, ("attributes",) inside a defs.yaml. Paths
        # below are relative to it; messages name the key as the file has it.
        self.section = section
        self.lines: dict[YamlPath, int] = {(): 1}
        self.from_env: dict[YamlPath, str] = {}
        self.plain_text: dict[YamlPath, str] = {}
        self.problems: list[ConfigError] = []
        self._seen_problems: set[tuple[int | None, str | None, str]] = set()
        self._constructor = yaml.constructor.SafeConstructor()
        self._checked_mappings: set[int] = set()

    def fail(self, problem: str, path: YamlPath = (), line: int | None = None) -> ConfigError:
        key = dotted((*self.section, *path))
        return ConfigError(problem, path=self.path, line=line or self.line(path), key=key or None)

    def problem(self, problem: str, path: YamlPath = (), line: int | None = None) -> None:
        error = self.fail(problem, path, line)
        seen = (error.line, error.key, error.problem)
        if seen not in self._seen_problems:
            self._seen_problems.add(seen)
            self.problems.append(error)

    def line(self, path: YamlPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor the YAML has (pydantic may name a missing key)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def load(self, text: str) -> Any:
        """The plain values of ``text`` (of its ``section``), or None when it holds nothing."""
        try:
            self._check_aliases(text)
            root = yaml.compose(text, Loader=_YamlLoader)
        except yaml.YAMLError as error:
            raise self._yaml_error(error) from None
        if root is None:
            return None
        for name in self.section:
            found = isinstance(root, yaml.MappingNode) and next(
                (value for key, value in root.value if isinstance(key, yaml.ScalarNode) and key.value == name), None
            )
            if not found:
                raise self.fail(f"required key {name} is missing", (), root.start_mark.line + 1)
            root = found
        if self.section:
            self.lines[()] = root.start_mark.line + 1
        return self._value(root, ())

    def _check_aliases(self, text: str) -> None:
        """Raise ConfigError at the first alias that refers to its own anchor (a loop) or takes the values the
        file expands to past MAX_YAML_VALUES; counted over the parser's events, before anything is built."""
        if "&" not in text:
            return  # no anchor, no alias to expand (an alias without its anchor is compose's error)
        values = 0
        sizes: dict[str, int] = {}  # values one alias of each closed anchor adds
        open_anchors: set[str] = set()
        frames: list[_Frame] = []  # the open mappings and lists, outermost first
        for event in yaml.parse(text, Loader=_YamlLoader):
            if isinstance(event, yaml.CollectionEndEvent):
                frame = frames.pop()
                if frame.anchor is not None:
                    sizes[frame.anchor] = values - frame.start
                    open_anchors.discard(frame.anchor)
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue
            if frames:
                frames[-1].enter(event)
            if isinstance(event, yaml.AliasEvent):
                line = event.start_mark.line + 1
                if event.anchor in open_anchors:
                    problem = f"the alias *{event.anchor} is inside its own anchor &{event.anchor}: it would never end"
                    raise self._file_error(problem, _entered_path(frames), line)
                values += sizes.get(event.anchor, 0)
                if values > MAX_YAML_VALUES:
                    raise self._file_error(
                        f"the alias *{event.anchor} takes the file past {MAX_YAML_VALUES:,} values (an alias "
                        "repeats its anchor's whole content, and aliases inside anchors multiply): use fewer or "
                        "less nested aliases",
                        _entered_path(frames),
                        line,
                    )
                continue
            values += 1
            if isinstance(event, yaml.CollectionStartEvent):
                frames.append(_Frame(event.anchor, values - 1, isinstance(event, yaml.MappingStartEvent)))
                if event.anchor is not None:
                    open_anchors.add(event.anchor)
            elif event.anchor is not None:
                sizes[event.anchor] = 1

    def _file_error(self, problem: str, path: YamlPath, line: int) -> ConfigError:
        """A problem at ``path`` counted from the top of the file (not of ``section``)."""
        return ConfigError(problem, path=self.path, line=line, key=dotted(path) or None)

    def _yaml_error(self, error: yaml.YAMLError, path: YamlPath = ()) -> ConfigError:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        parts = [getattr(error, "context", None), getattr(error, "problem", None)]
        detail = ", ".join(part for part in parts if part) or str(error)
        line = mark.line + 1 if mark is not None else None
        return self.fail(f"invalid YAML: {detail}", path, line)

    def _value(self, node: yaml.Node, path: YamlPath) -> Any:
        if not isinstance(node, yaml.ScalarNode) and node.tag not in _COLLECTION_TAGS:
            self.problem(f"the YAML tag {node.tag} is not supported here", path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self._value(item, (*path, index)))
            return items
        if node.tag == _STR_TAG:
            return self._string(node.value, path)
        try:
            value = self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as error:
            self.problems.append(self._yaml_error(error, path))
            return None
        self.plain_text[path] = node.value
        return value

    def _mapping(self, node: yaml.MappingNode, path: YamlPath) -> dict[str, Any]:
        # An alias makes one node appear twice, and the first visit already merged its `<<` keys into it.
        if id(node) not in self._checked_mappings:
            self._checked_mappings.add(id(node))
            # PyYAML keeps the last of two equal keys without a word: catch it before merging `<<` keys.
            first_line: dict[str, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue
                line = key_node.start_mark.line + 1
                if key_node.value in first_line:
                    self._duplicate(path, key_node.value, first_line[key_node.value], line)
                else:
                    first_line[key_node.value] = line
            try:
                self._constructor.flatten_mapping(node)
            except yaml.YAMLError as error:
                self.problems.append(self._yaml_error(error, path))
                return {}
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(
                    "keys must be plain names, not lists or mappings", path, key_node.start_mark.line + 1
                )
                continue
            # Keys are names (databases, collections, options, fields): keep the text, so `2021:` or `on:`
            # stay the strings the user typed rather than an int or a bool.
            key = key_node.value
            key_path = (*path, key)
            self.lines[key_path] = key_node.start_mark.line + 1
            result[key] = self._value(value_node, key_path)
        return result

    def _duplicate(self, path: YamlPath, key: str, first: int, again: int) -> None:
        if path == ("databases",):
            what = f"database {key!r} is listed twice"
        elif len(path) == 3 and path[0] == "databases" and path[2] == "collections":
            what = f"collection {key!r} is listed twice"
        else:
            what = f"key {key!r} is given twice"
        self.problem(
            f"{what} (lines {first} and {again}); YAML would silently keep only the last", (*path, key), again
        )

    def _string(self, value: str, path: YamlPath) -> str:
        password = _LITERAL_PASSWORD.match(value) if path and path[-1] == "connection_url" else None
        if password and "${" not in password["password"]:
            self.problem(
                "holds a literal password: the YAML is checked in and shown in the UI; put the URL in an "
                "environment variable (connection_url: ${MONGODB_URI}) or the password alone "
                "(mongodb://user:${MONGODB_PASSWORD}@host/)",
                path,
            )
        if "${" not in value:
            return value
        resolved, missing, malformed = interpolate(value)
        if path and path[-1] == "connection_url":
            # Resolved at run time only; here just the syntax is checked.
            if malformed:
                self.problem(interpolation_problem(value, missing, malformed), path)
            return value
        if missing or malformed:
            self.problem(interpolation_problem(value, missing, malformed), path)
            return value
        self.from_env[path] = value
        return resolved

    def shown_input(self, path: YamlPath, value: Any) -> str:
        """The value at ``path`` as a message shows it: one from the environment by its variable only."""
        if path in self.from_env:
            return f"{self.from_env[path]!r} (from the environment)"
        return show_value(value)

    def validate(
        self, model: type[BaseModel], value: Any, path: YamlPath, *, extra_keys: Sequence[str] = ()
    ) -> Any:
        """``model`` validated from ``value``, or None after recording every problem pydantic reports."""
        try:
            return model.model_validate(value)
        except ValidationError as error:
            for details in error.errors():
                where = (*path, *details["loc"])
                self.problem(self._describe(details, model, where, extra_keys), where)
            return None

    def _describe(
        self, error: ErrorDetails, model: type[BaseModel], where: YamlPath, extra_keys: Sequence[str]
    ) -> str:
        kind, ctx, loc = error["type"], error.get("ctx") or {}, error["loc"]
        shown = self.shown_input(where, error["input"])
        if kind == "missing":
            return f"required key {loc[-1]} is missing"
        if kind == "extra_forbidden":
            return _unknown_key(str(loc[-1]), model, loc[:-1], extra_keys)
        if kind == "literal_error":
            expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
            return f"{shown} is not one of {expected}"
        if kind == "greater_than" and ctx.get("gt") == 0:
            return f"must be a positive number, got {shown}"
        if kind in ("greater_than", "greater_than_equal"):
            bound = ctx.get("gt", ctx.get("ge"))
            return f"must be {'more than' if kind == 'greater_than' else 'at least'} {bound}, got {shown}"
        if kind in ("int_parsing", "int_type", "int_from_float"):
            return f"expected a whole number, got {shown}"
        if kind in ("float_parsing", "float_type"):
            return f"expected a number, got {shown}"
        if kind in ("bool_parsing", "bool_type"):
            return f"expected true or false, got {shown}"
        if kind == "string_type":
            quote = " (quote it in the YAML)" if isinstance(error["input"], int | float | bool) else ""
            return f"expected a string, got {shown}{quote}"
        if kind == "string_too_short":
            return "must not be empty"
        if kind in ("dict_type", "model_type", "model_attributes_type"):
            return f"expected a mapping, got {shown}"
        if kind in ("tuple_type", "list_type"):
            return f"expected a list, got {shown}"
        if kind == "unknown_option":
            return error["msg"]
        if kind in ("value_error", "assertion_error"):
            message = str(ctx.get("error", error["msg"]))
            if where in self.from_env and isinstance(error["input"], str):
                # A value from the environment may be a secret: name the variable, never the value.
                message = message.replace(repr(error["input"]), shown)
            return message
        return f"{error['msg']}, got {shown}"


def _nested_model(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        candidates = [field.annotation, *get_args(field.annotation)]
        nested = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nested is None:
            return None
        model = nested
    return model


def _unknown_key(
    key: str, model: type[BaseModel], loc: Sequence[str | int], extra_keys: Sequence[str]
) -> str:
    at = _nested_model(model, loc)
    if at is None:
        return f"unknown key {key!r}"
    if at is DefaultsSection and key in DatabaseSection.model_fields:
        return f"{key} is set per database (databases.<name>.{key}), not in defaults"
    if at is CollectionOptions and key in DatabaseSection.model_fields:
        levels = (
            "on the database or in defaults" if key in DefaultsSection.model_fields else "on the database"
        )
        return f"{key} is a database option: set it {levels}, not on a collection"
    allowed = [*at.model_fields, *extra_keys]
    hint = did_you_mean(key, allowed)
    note = ""
    if at is DatabaseSection:
        note = "; collections go under `collections:`"
    if at is DestinationConfig:
        note = "; other settings of the dlt destination go under `options:`"
    return f"unknown key {key!r}{hint}; allowed keys: {', '.join(allowed)}{note}"
