"""The reading form: the questions a reader answers for each case, and the checking of those answers.

A form is a JSON document ``{"title": ..., "items": [...]}`` in the spirit of NORA's Reading Tool. Every
item that takes an answer has a name, and the names share one namespace across the whole form, subforms
included, so that a reader's answers to a case are one flat JSON object of names and values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeAlias

from nifti_archive.catalog.tags import TAG, TagLevel
from nifti_archive.errors import InvalidValue

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_ITEMS = 500
# Subforms inside subforms, counting the outermost as 1.
MAX_DEPTH = 4
MAX_OPTIONS = 100
MAX_OPTION_CHARS = 200
MAX_LABEL_CHARS = 500
MAX_HELP_CHARS = 2000
MAX_RATING_LEVELS = 100
MAX_TEXT_CHARS = 10_000
MAX_MARKERS = 1000
# Voxel indices of an ROI answer must fit the signed 32-bit integers of the viewer's typed arrays.
MAX_VOXELS = 2**31

ConditionValue: TypeAlias = str | int | float | bool


class FormError(InvalidValue):
    """A form document that is not valid; the message names the item by its path and name, and the field."""


class ItemKind(Enum):
    RADIO = "radio"
    RADIOVERT = "radiovert"
    RATING = "rating"
    COMBO = "combo"
    CHECKBOX = "checkbox"
    SEPARATOR = "separator"
    TEXT = "text"
    NUMBER = "number"
    SLIDER = "slider"
    MARKERPOINT = "markerpoint"
    MARKERSET = "markerset"
    ROI = "roi"
    SUBFORM = "subform"

    @property
    def answers(self) -> bool:
        """Whether an item of this kind takes an answer: a separator and a subform only arrange the others."""
        return self not in (ItemKind.SEPARATOR, ItemKind.SUBFORM)

    @property
    def radio_like(self) -> bool:
        """Whether the answer is one of the item's options."""
        return self in (ItemKind.RADIO, ItemKind.RADIOVERT, ItemKind.COMBO)


_COMMON_FIELDS = frozenset({"kind", "name", "label", "help", "when"})
_FIELDS: dict[ItemKind, frozenset[str]] = {
    ItemKind.RADIO: _COMMON_FIELDS | {"required", "options", "useastag"},
    ItemKind.RADIOVERT: _COMMON_FIELDS | {"required", "options", "useastag"},
    ItemKind.COMBO: _COMMON_FIELDS | {"required", "options", "useastag"},
    ItemKind.RATING: _COMMON_FIELDS | {"required", "min", "max"},
    ItemKind.CHECKBOX: _COMMON_FIELDS | {"required", "useastag"},
    ItemKind.SEPARATOR: _COMMON_FIELDS - {"name"},
    ItemKind.TEXT: _COMMON_FIELDS | {"required", "multiline"},
    ItemKind.NUMBER: _COMMON_FIELDS | {"required", "min", "max", "step"},
    ItemKind.SLIDER: _COMMON_FIELDS | {"required", "min", "max", "step"},
    ItemKind.MARKERPOINT: _COMMON_FIELDS | {"required"},
    ItemKind.MARKERSET: _COMMON_FIELDS | {"required"},
    ItemKind.ROI: _COMMON_FIELDS | {"required"},
    ItemKind.SUBFORM: _COMMON_FIELDS | {"items"},
}
_KNOWN_FIELDS = frozenset[str]().union(*_FIELDS.values())
# Answers that are coordinates or masks: no condition can sensibly name one of their values.
_STRUCTURED = frozenset({ItemKind.MARKERPOINT, ItemKind.MARKERSET, ItemKind.ROI})
_RATING_DEFAULTS = (1, 5)


@dataclass(frozen=True)
class Condition:
    """Show an item only when the answer to item ``item`` is one of ``values``."""

    item: str
    values: tuple[ConditionValue, ...]


@dataclass(frozen=True)
class FormItem:
    """One item of a form. ``minimum``/``maximum`` are whole numbers for a rating (1 and 5 unless the
    form says otherwise); ``name`` is None only for a separator."""

    kind: ItemKind
    name: str | None
    label: str
    required: bool
    options: tuple[str, ...]
    minimum: float | None
    maximum: float | None
    step: float | None
    multiline: bool
    useastag: TagLevel | None
    condition: Condition | None
    help: str
    items: tuple[FormItem, ...]


@dataclass(frozen=True)
class Form:
    title: str
    items: tuple[FormItem, ...]

    def answer_items(self) -> list[FormItem]:
        """Every item that takes an answer, in document order, with the items of subforms in their place."""
        return [item for item, _ in _walk(self.items, None) if item.kind.answers]

    def item(self, name: str) -> FormItem:
        """The item called ``name``, at any depth; KeyError if there is none."""
        for item, _ in _walk(self.items, None):
            if item.name == name:
                return item
        raise KeyError(name)

    def visible(self, answers: Mapping[str, Any]) -> set[str]:
        """The names of the answerable items shown to a reader who gave ``answers``.

        An item is hidden when its condition does not hold, when the item its condition names is itself
        hidden (a hidden answer does not count), or when a subform that holds it is hidden.
        """
        items: dict[str, FormItem] = {}
        parents: dict[str, str | None] = {}
        for item, parent in _walk(self.items, None):
            if item.name is not None:
                items[item.name] = item
                parents[item.name] = parent
        shown: dict[str, bool] = {}

        # parse_form refuses cycles, so this recursion ends; its depth is bounded by MAX_ITEMS.
        def is_shown(name: str) -> bool:
            if name not in shown:
                parent = parents[name]
                condition = items[name].condition
                result = parent is None or is_shown(parent)
                if result and condition is not None:
                    result = is_shown(condition.item) and any(_matches(answers.get(condition.item), value) for value in condition.values)
                shown[name] = result
            return shown[name]

        return {name for name, item in items.items() if item.kind.answers and is_shown(name)}


def parse_form(document: Any) -> Form:
    """The form described by a JSON document; FormError naming the first fault if it is not valid."""
    if not isinstance(document, dict) or not isinstance(document.get("items"), list):
        raise FormError('the form must be a JSON object with "items"')
    for field in document:
        if field not in ("title", "items"):
            raise FormError(f"the form: unknown field {field!r}")
    title = document.get("title", "")
    if not isinstance(title, str) or len(title) > MAX_LABEL_CHARS:
        raise FormError(f"the form: title must be a string of at most {MAX_LABEL_CHARS} characters")
    parser = _Parser()
    form = Form(title, parser.items(document["items"], "items", 0))
    parser.check_conditions(form)
    return form


def form_document(form: Form) -> dict[str, Any]:
    """The canonical JSON document of ``form``, leaving out every field at its default."""
    document: dict[str, Any] = {}
    if form.title:
        document["title"] = form.title
    document["items"] = [_item_document(item) for item in form.items]
    return document


def check_answers(form: Form, answers: Any, complete: bool) -> dict[str, Any]:
    """The answers, checked against the form and cleaned, in document order; InvalidValue if one is wrong.

    ``None`` means not answered and is left out. Numbers of number, slider and marker items come back as
    floats, ratings as ints. With ``complete`` (the reader submits the case) every required item that is
    shown must have an answer, where a blank text is no answer and an empty marker set is one (the reader
    found nothing), and answers to hidden items are dropped; a draft keeps them, so that a reader who
    changes their mind back finds what they wrote.
    """
    if not isinstance(answers, dict):
        raise InvalidValue("the answers must be a JSON object of item names and values")
    items = _answer_items(form)
    unknown = [name for name in answers if name not in items]
    if unknown:
        raise InvalidValue(f"the form has no item that takes an answer called {', '.join(repr(name) for name in unknown)}")
    cleaned: dict[str, Any] = {}
    for name, item in items.items():
        value = answers.get(name)
        if value is not None:
            try:
                cleaned[name] = _clean_value(item, value)
            except InvalidValue as error:
                raise InvalidValue(f"answer to {name!r}: {error}") from None
    if not complete:
        return cleaned
    shown = form.visible(cleaned)
    for name, item in items.items():
        if item.required and name in shown and _unanswered(item, cleaned.get(name)):
            raise InvalidValue(f"required item {name!r} has no answer")
    return {name: value for name, value in cleaned.items() if name in shown}


def answer_tags(form: Form, answers: Mapping[str, Any]) -> list[tuple[TagLevel, set[str], set[str]]]:
    """The tag changes the answers make: one (level, tags to add, tags to remove) per item with useastag.

    One tuple per item, in document order, not merged per level: two items may share a tag, and a caller
    that applies them in order lets the later item win, as the reader saw them on the form. A radio-like
    item adds its chosen option and removes its others (all of them when unanswered); a checkbox adds its
    name when ticked and removes it otherwise. ``answers`` should have passed check_answers.
    """
    changes: list[tuple[TagLevel, set[str], set[str]]] = []
    for name, item in _answer_items(form).items():
        if item.useastag is None:
            continue
        answer = answers.get(name)
        if item.kind.radio_like:
            added = {answer} if answer in item.options else set()
            changes.append((item.useastag, added, set(item.options) - added))
        elif answer is True:
            changes.append((item.useastag, {name}, set()))
        else:
            changes.append((item.useastag, set(), {name}))
    return changes


def mask_runs(runs: Any, voxels: int | None) -> list[tuple[int, int]]:
    """The (start, length) pairs of a run-length voxel mask ``[start0, length0, start1, length1, ...]``.

    InvalidValue unless the starts are whole numbers from 0 in increasing order, the lengths positive,
    the runs apart from one another and, when ``voxels`` is given, all of them below it.
    """
    if not isinstance(runs, list | tuple) or len(runs) % 2 or not all(_is_int(number) for number in runs):
        raise InvalidValue("runs must be a list of whole numbers: start, length, start, length, ...")
    pairs = list(zip(runs[::2], runs[1::2], strict=True))
    end = 0
    for start, length in pairs:
        if length <= 0:
            raise InvalidValue(f"the run at {start} must have a positive length")
        if start < end:
            raise InvalidValue(f"the run at {start} must start at or after {end}: runs start from 0, in order, without overlapping")
        end = start + length
    if voxels is not None and end > voxels:
        raise InvalidValue(f"the runs must stay inside the {voxels} voxels of the mask")
    return pairs


def _walk(items: Sequence[FormItem], parent: str | None) -> Iterator[tuple[FormItem, str | None]]:
    """Every item in document order, with the name of the subform that holds it (None at the top)."""
    for item in items:
        yield item, parent
        yield from _walk(item.items, item.name)


def _answer_items(form: Form) -> dict[str, FormItem]:
    # Items that take answers always have names; the test only tells the type checker so.
    return {item.name: item for item in form.answer_items() if item.name is not None}


def _matches(answer: Any, value: ConditionValue) -> bool:
    # Python's bool is an int, but JSON's true is not 1: a checkbox's true must not match a rating of 1.
    if isinstance(answer, bool) or isinstance(value, bool):
        return answer is value
    return bool(answer == value)


def _unanswered(item: FormItem, value: Any) -> bool:
    return value is None or (item.kind is ItemKind.TEXT and not value.strip())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite JSON number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _scalar(value: Any) -> bool:
    return isinstance(value, str) or _is_int(value) or isinstance(value, bool) or _finite(value) is not None


class _Parser:
    """Parses items depth first, keeping what the checks across the whole form need."""

    def __init__(self) -> None:
        self.count = 0
        # Each name's path, for the uniqueness check and for messages about it.
        self.paths: dict[str, str] = {}
        self.conditioned: list[tuple[str, FormItem, Condition]] = []

    def items(self, raw: list[Any], path: str, depth: int) -> tuple[FormItem, ...]:
        return tuple(self.item(element, f"{path}[{index}]", depth) for index, element in enumerate(raw))

    def item(self, raw: Any, path: str, depth: int) -> FormItem:
        self.count += 1
        if self.count > MAX_ITEMS:
            raise FormError(f"{path}: a form has at most {MAX_ITEMS} items")
        if not isinstance(raw, dict):
            raise FormError(f"{path}: an item must be a JSON object")
        raw_name = raw.get("name")
        where = f"{path} {raw_name!r}" if isinstance(raw_name, str) and NAME.fullmatch(raw_name) else path
        try:
            kind = ItemKind(raw.get("kind"))
        except ValueError:
            raise FormError(f"{where}: kind must be one of {', '.join(kind.value for kind in ItemKind)}") from None
        for field in raw:
            if field not in _KNOWN_FIELDS:
                raise FormError(f"{where}: unknown field {field!r}")
            if field not in _FIELDS[kind]:
                raise FormError(f"{where}: {field!r} does not apply to a {kind.value} item")
        name = None if kind is ItemKind.SEPARATOR else self.name(raw_name, path, where)
        options = _options(raw.get("options"), where) if kind.radio_like else ()
        minimum, maximum, step = _range(kind, raw, where)
        useastag = _tag_level(raw["useastag"], where) if "useastag" in raw else None
        if useastag is not None:
            # A checkbox tags with its name, which NAME already keeps within TAG.
            for option in options:
                if not TAG.fullmatch(option):
                    raise FormError(f"{where}: useastag needs every option to be a tag, and {option!r} is not "
                                    "(up to 64 letters, digits, '.', '+', '-' or '_')")
        item = FormItem(
            kind=kind,
            name=name,
            label=_text(raw, "label", MAX_LABEL_CHARS, name or "", where),
            required=_flag(raw, "required", where),
            options=options,
            minimum=minimum,
            maximum=maximum,
            step=step,
            multiline=_flag(raw, "multiline", where),
            useastag=useastag,
            condition=_condition(raw["when"], where) if "when" in raw else None,
            help=_text(raw, "help", MAX_HELP_CHARS, "", where),
            items=self.subform(raw.get("items"), path, where, depth + 1) if kind is ItemKind.SUBFORM else (),
        )
        if item.condition is not None:
            self.conditioned.append((where, item, item.condition))
        return item

    def name(self, raw: Any, path: str, where: str) -> str:
        if not isinstance(raw, str) or not NAME.fullmatch(raw):
            raise FormError(f"{path}: name must be a letter or '_' followed by up to 63 letters, digits or '_'")
        if raw in self.paths:
            raise FormError(f"{where}: the name is already used by {self.paths[raw]}")
        self.paths[raw] = path
        return raw

    def subform(self, raw: Any, path: str, where: str, depth: int) -> tuple[FormItem, ...]:
        if depth > MAX_DEPTH:
            raise FormError(f"{where}: subforms nest at most {MAX_DEPTH} deep")
        if not isinstance(raw, list) or not raw:
            raise FormError(f"{where}: items must be a non-empty list of items")
        return self.items(raw, f"{path}.items", depth)

    def check_conditions(self, form: Form) -> None:
        """Refuse conditions on items that do not exist or cannot be answered, and conditions in a cycle."""
        items = {item.name: item for item, _ in _walk(form.items, None) if item.name is not None}
        for where, item, condition in self.conditioned:
            target = items.get(condition.item)
            if target is None:
                raise FormError(f"{where}: when: the form has no item {condition.item!r}")
            if target is item or any(inner is target for inner, _ in _walk(item.items, None)):
                raise FormError(f"{where}: when: an item cannot depend on itself or on an item inside it")
            if not target.kind.answers or target.kind in _STRUCTURED:
                raise FormError(f"{where}: when: a condition cannot test {target.name!r}, a {target.kind.value} item")
            for value in condition.values:
                try:
                    _clean_value(target, value)
                except InvalidValue as error:
                    raise FormError(f"{where}: when: {value!r} cannot be an answer to {target.name!r} ({error})") from None
        self.refuse_cycles(form)

    def refuse_cycles(self, form: Form) -> None:
        # An item needs the item its condition names and the subform that holds it: both decide whether it is shown.
        needs: dict[str, list[str]] = {}
        for item, parent in _walk(form.items, None):
            if item.name is not None:
                needs[item.name] = [name for name in (parent, item.condition.item if item.condition else None) if name is not None]
        done: set[str] = set()
        trail: list[str] = []

        def visit(name: str) -> None:
            if name in trail:
                cycle = trail[trail.index(name):]
                raise FormError(f"{self.paths[name]} {name!r}: when: the conditions form a cycle through "
                                f"{', '.join(repr(step) for step in cycle)}")
            if name in done:
                return
            trail.append(name)
            for needed in needs[name]:
                visit(needed)
            trail.pop()
            done.add(name)

        for name in needs:
            visit(name)


def _text(raw: dict[str, Any], field: str, limit: int, default: str, where: str) -> str:
    value = raw.get(field, default)
    if not isinstance(value, str) or len(value) > limit:
        raise FormError(f"{where}: {field} must be a string of at most {limit} characters")
    return value


def _flag(raw: dict[str, Any], field: str, where: str) -> bool:
    value = raw.get(field, False)
    if not isinstance(value, bool):
        raise FormError(f"{where}: {field} must be true or false")
    return value


def _options(raw: Any, where: str) -> tuple[str, ...]:
    if (not isinstance(raw, list) or not raw or not all(isinstance(option, str) and option for option in raw)
            or len(set(raw)) != len(raw)):
        raise FormError(f"{where}: options must be a non-empty list of distinct strings")
    if len(raw) > MAX_OPTIONS:
        raise FormError(f"{where}: options must be at most {MAX_OPTIONS}")
    for option in raw:
        if len(option) > MAX_OPTION_CHARS:
            raise FormError(f"{where}: option {option[:20]!r}... is longer than {MAX_OPTION_CHARS} characters")
    return tuple(raw)


def _range(kind: ItemKind, raw: dict[str, Any], where: str) -> tuple[float | None, float | None, float | None]:
    """The minimum, maximum and step of a rating, number or slider; Nones for the other kinds."""
    if kind is ItemKind.RATING:
        low, high = raw.get("min", _RATING_DEFAULTS[0]), raw.get("max", _RATING_DEFAULTS[1])
        if not _is_int(low) or not _is_int(high) or not low < high:
            raise FormError(f"{where}: min and max of a rating must be whole numbers with min < max")
        if high - low + 1 > MAX_RATING_LEVELS:
            raise FormError(f"{where}: a rating has at most {MAX_RATING_LEVELS} levels")
        return low, high, None
    if kind not in (ItemKind.NUMBER, ItemKind.SLIDER):
        return None, None, None
    bounds: list[float | None] = []
    for field in ("min", "max", "step"):
        number = _finite(raw.get(field))
        if field in raw and number is None:
            raise FormError(f"{where}: {field} must be a finite number")
        bounds.append(number)
    minimum, maximum, step = bounds
    if kind is ItemKind.SLIDER and (minimum is None or maximum is None or not minimum < maximum):
        raise FormError(f"{where}: a slider needs min and max with min < max")
    if minimum is not None and maximum is not None and minimum > maximum:
        raise FormError(f"{where}: min must not be above max")
    if step is not None and step <= 0:
        raise FormError(f"{where}: step must be above 0")
    return minimum, maximum, step


def _tag_level(raw: Any, where: str) -> TagLevel:
    # NORA's forms write useastag as true or 1 for the study's tags.
    if raw is True or raw == "study" or (_is_int(raw) and raw == 1):
        return TagLevel.STUDY
    if raw == "subject":
        return TagLevel.SUBJECT
    raise FormError(f'{where}: useastag must be true, 1, "study" or "subject"')


def _condition(raw: Any, where: str) -> Condition:
    if (not isinstance(raw, dict) or set(raw) != {"item", "is"} or not isinstance(raw["item"], str)
            or not isinstance(raw["is"], list) or not raw["is"] or not all(_scalar(value) for value in raw["is"])):
        raise FormError(f'{where}: when must be {{"item": name, "is": [values]}} with at least one value, '
                        "each a string, number or boolean")
    return Condition(raw["item"], tuple(raw["is"]))


def _item_document(item: FormItem) -> dict[str, Any]:
    document: dict[str, Any] = {"kind": item.kind.value}
    if item.name is not None:
        document["name"] = item.name
    if item.label != (item.name or ""):
        document["label"] = item.label
    if item.required:
        document["required"] = True
    if item.options:
        document["options"] = list(item.options)
    default_minimum, default_maximum = _RATING_DEFAULTS if item.kind is ItemKind.RATING else (None, None)
    if item.minimum != default_minimum:
        document["min"] = item.minimum
    if item.maximum != default_maximum:
        document["max"] = item.maximum
    if item.step is not None:
        document["step"] = item.step
    if item.multiline:
        document["multiline"] = True
    if item.useastag is not None:
        document["useastag"] = item.useastag.value
    if item.condition is not None:
        document["when"] = {"item": item.condition.item, "is": list(item.condition.values)}
    if item.help:
        document["help"] = item.help
    if item.items:
        document["items"] = [_item_document(inner) for inner in item.items]
    return document


def _clean_value(item: FormItem, value: Any) -> Any:
    """``value`` as an answer to ``item``; InvalidValue saying what the answer must be otherwise."""
    kind = item.kind
    if kind.radio_like:
        if not isinstance(value, str) or value not in item.options:
            raise InvalidValue(f"must be one of {', '.join(repr(option) for option in item.options)}")
        return value
    if kind is ItemKind.RATING:
        if not _is_int(value) or not _within(item, value):
            raise InvalidValue(f"must be a whole number from {item.minimum} to {item.maximum}")
        return value
    if kind is ItemKind.CHECKBOX:
        if not isinstance(value, bool):
            raise InvalidValue("must be true or false")
        return value
    if kind is ItemKind.TEXT:
        if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS:
            raise InvalidValue(f"must be a string of at most {MAX_TEXT_CHARS} characters")
        return value
    if kind in (ItemKind.NUMBER, ItemKind.SLIDER):
        number = _finite(value)
        if number is None or not _within(item, number):
            raise InvalidValue(f"must be a finite number{_range_text(item)}")
        return number
    if kind is ItemKind.MARKERPOINT:
        return _point(value)
    if kind is ItemKind.MARKERSET:
        if not isinstance(value, list | tuple) or len(value) > MAX_MARKERS:
            raise InvalidValue(f"must be a list of at most {MAX_MARKERS} points [x, y, z]")
        return [_point(point) for point in value]
    return _roi(value)


def _within(item: FormItem, number: float) -> bool:
    return (item.minimum is None or number >= item.minimum) and (item.maximum is None or number <= item.maximum)


def _range_text(item: FormItem) -> str:
    if item.minimum is not None and item.maximum is not None:
        return f" from {item.minimum:g} to {item.maximum:g}"
    if item.minimum is not None:
        return f" of at least {item.minimum:g}"
    if item.maximum is not None:
        return f" of at most {item.maximum:g}"
    return ""


def _point(value: Any) -> list[float]:
    """A marker: world coordinates in millimetres."""
    fault = InvalidValue("a point must be [x, y, z]: three finite numbers, world coordinates in mm")
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise fault
    coordinates: list[float] = []
    for number in value:
        coordinate = _finite(number)
        if coordinate is None:
            raise fault
        coordinates.append(coordinate)
    return coordinates


def _roi(value: Any) -> dict[str, list[int]]:
    """A voxel mask: its grid's dimensions and the runs of voxels in it, in the flat order of the grid."""
    if not isinstance(value, dict) or set(value) != {"dims", "runs"}:
        raise InvalidValue('must be {"dims": [a, b, c], "runs": [start, length, ...]}')
    dims = value["dims"]
    if not isinstance(dims, list | tuple) or len(dims) != 3 or not all(_is_int(size) and size > 0 for size in dims):
        raise InvalidValue("dims must be three positive whole numbers")
    voxels = math.prod(dims)
    if voxels > MAX_VOXELS:
        raise InvalidValue(f"dims must describe at most {MAX_VOXELS} voxels")
    mask_runs(value["runs"], voxels)
    return {"dims": list(dims), "runs": list(value["runs"])}
