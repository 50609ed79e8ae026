"""Reading forms: parsing and its error messages, the canonical document, visibility, answers and tags."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nifti_archive.catalog.tags import TagLevel
from nifti_archive.errors import InvalidValue
from nifti_archive.readings.forms import (
    Condition,
    FormError,
    ItemKind,
    answer_tags,
    check_answers,
    form_document,
    parse_form,
)

FORM: dict[str, Any] = {
    "title": "Stroke follow-up",
    "items": [
        {"kind": "separator", "label": "Findings"},
        {"kind": "radio", "name": "side", "label": "Side", "options": ["left", "right", "both"], "required": True,
         "useastag": "study"},
        {"kind": "rating", "name": "quality", "required": True},
        {"kind": "checkbox", "name": "motion", "useastag": "subject"},
        {"kind": "subform", "name": "lesion", "when": {"item": "side", "is": ["left", "both"]}, "items": [
            {"kind": "number", "name": "volume", "min": 0, "required": True, "help": "in ml"},
            {"kind": "slider", "name": "confidence", "min": 0, "max": 100, "step": 5},
            {"kind": "subform", "name": "detail", "items": [
                {"kind": "markerpoint", "name": "centre"},
                {"kind": "text", "name": "remark", "multiline": True, "when": {"item": "quality", "is": [1, 2]}},
            ]},
        ]},
        {"kind": "combo", "name": "grade", "options": ["I", "II", "III"]},
        {"kind": "radiovert", "name": "follow", "options": ["yes", "no"], "useastag": True},
        {"kind": "markerset", "name": "spots"},
        {"kind": "roi", "name": "mask"},
        {"kind": "text", "name": "note", "when": {"item": "motion", "is": [True]}},
    ],
}


def test_a_form_with_every_kind_parses_into_items_in_document_order() -> None:
    form = parse_form(FORM)
    assert form.title == "Stroke follow-up"
    names = [item.name for item in form.answer_items()]
    assert names == ["side", "quality", "motion", "volume", "confidence", "centre", "remark", "grade", "follow", "spots",
                     "mask", "note"]
    assert {item.kind for item in form.answer_items()} | {ItemKind.SEPARATOR, ItemKind.SUBFORM} == set(ItemKind)
    side = form.item("side")
    assert side.options == ("left", "right", "both")
    assert side.useastag is TagLevel.STUDY and side.required and side.label == "Side"
    quality = form.item("quality")
    assert (quality.minimum, quality.maximum, quality.label) == (1, 5, "quality")
    assert form.item("follow").useastag is TagLevel.STUDY
    assert form.item("motion").useastag is TagLevel.SUBJECT
    assert form.item("lesion").condition == Condition("side", ("left", "both"))
    assert form.item("remark").multiline
    assert form.item("volume").minimum == 0.0 and form.item("volume").maximum is None
    assert form.items[0].name is None and form.items[0].label == "Findings"
    with pytest.raises(KeyError):
        form.item("nothing")


def test_kind_properties() -> None:
    assert not ItemKind.SEPARATOR.answers and not ItemKind.SUBFORM.answers
    assert all(kind.answers for kind in ItemKind if kind not in (ItemKind.SEPARATOR, ItemKind.SUBFORM))
    assert {kind for kind in ItemKind if kind.radio_like} == {ItemKind.RADIO, ItemKind.RADIOVERT, ItemKind.COMBO}


def test_the_canonical_document_parses_back_to_the_same_form_and_leaves_out_defaults() -> None:
    form = parse_form(FORM)
    document = form_document(form)
    assert parse_form(document) == form
    assert form_document(parse_form(document)) == document
    assert document["items"][2] == {"kind": "rating", "name": "quality", "required": True}
    assert document["items"][1]["useastag"] == "study"
    assert document["items"][6]["useastag"] == "study"
    assert document["items"][0] == {"kind": "separator", "label": "Findings"}
    lesion = document["items"][4]
    assert lesion["items"][0] == {"kind": "number", "name": "volume", "required": True, "min": 0.0, "help": "in ml"}
    assert form_document(parse_form({"items": []})) == {"items": []}
    rating = parse_form({"items": [{"kind": "rating", "name": "r", "min": 0, "max": 10, "label": "R"}]})
    assert form_document(rating) == {"items": [{"kind": "rating", "name": "r", "label": "R", "min": 0, "max": 10}]}


def at(index: int, item: dict[str, Any]) -> dict[str, Any]:
    """A copy of FORM with ``item`` in place of its item ``index``."""
    document = copy.deepcopy(FORM)
    document["items"][index] = item
    return document


def nested(item: dict[str, Any]) -> dict[str, Any]:
    """A copy of FORM with ``item`` as the first item of the subform 'lesion' (items[4])."""
    document = copy.deepcopy(FORM)
    document["items"][4]["items"][0] = item
    return document


def subforms(depth: int) -> dict[str, Any]:
    item: dict[str, Any] = {"kind": "checkbox", "name": "leaf"}
    for level in range(depth):
        item = {"kind": "subform", "name": f"s{level}", "items": [item]}
    return {"items": [item]}


@pytest.mark.parametrize(("document", "message"), [
    ([], 'the form must be a JSON object with "items"'),
    ({"title": "x"}, 'the form must be a JSON object with "items"'),
    ({"items": {}}, 'the form must be a JSON object with "items"'),
    ({"items": [], "colour": "red"}, "the form: unknown field 'colour'"),
    ({"items": [], "title": 3}, "the form: title must be a string of at most 500 characters"),
    ({"items": ["radio"]}, "items[0]: an item must be a JSON object"),
    ({"items": [{"kind": "dial", "name": "x"}]}, "items[0] 'x': kind must be one of radio, radiovert, rating"),
    ({"items": [{"name": "x"}]}, "items[0] 'x': kind must be one of"),
    (at(2, {"kind": "radio", "name": "side2", "options": []}),
     "items[2] 'side2': options must be a non-empty list of distinct strings"),
    (at(2, {"kind": "radio", "name": "side2", "options": ["a", "a"]}),
     "items[2] 'side2': options must be a non-empty list of distinct strings"),
    (at(2, {"kind": "combo", "name": "side2", "options": ["a", ""]}),
     "items[2] 'side2': options must be a non-empty list of distinct strings"),
    (at(2, {"kind": "combo", "name": "side2"}), "items[2] 'side2': options must be a non-empty list of distinct strings"),
    (at(2, {"kind": "combo", "name": "side2", "options": [str(n) for n in range(101)]}),
     "items[2] 'side2': options must be at most 100"),
    (at(2, {"kind": "combo", "name": "side2", "options": ["x" * 201]}), "is longer than 200 characters"),
    (nested({"kind": "checkbox", "name": "x", "colour": "red"}), "items[4].items[0] 'x': unknown field 'colour'"),
    (nested({"kind": "checkbox", "name": "side"}), "items[4].items[0] 'side': the name is already used by items[1]"),
    (at(2, {"kind": "rating"}), "items[2]: name must be a letter or '_'"),
    (at(2, {"kind": "rating", "name": "9lives"}), "items[2]: name must be a letter or '_'"),
    (at(2, {"kind": "rating", "name": "a" * 65}), "items[2]: name must be a letter or '_'"),
    (at(2, {"kind": "rating", "name": "naïve"}), "items[2]: name must be a letter or '_'"),
    (at(0, {"kind": "separator", "name": "s"}), "items[0] 's': 'name' does not apply to a separator item"),
    (at(0, {"kind": "separator", "required": True}), "items[0]: 'required' does not apply to a separator item"),
    (at(2, {"kind": "rating", "name": "q", "options": ["a"]}), "items[2] 'q': 'options' does not apply to a rating item"),
    (at(2, {"kind": "rating", "name": "q", "step": 1}), "items[2] 'q': 'step' does not apply to a rating item"),
    (at(2, {"kind": "text", "name": "q", "useastag": True}), "items[2] 'q': 'useastag' does not apply to a text item"),
    (at(2, {"kind": "checkbox", "name": "q", "multiline": True}), "'multiline' does not apply to a checkbox item"),
    (at(4, {"kind": "subform", "name": "q", "required": True, "items": [{"kind": "separator"}]}),
     "items[4] 'q': 'required' does not apply to a subform item"),
    (at(2, {"kind": "checkbox", "name": "q", "required": "yes"}), "items[2] 'q': required must be true or false"),
    (at(2, {"kind": "checkbox", "name": "q", "label": "x" * 501}), "items[2] 'q': label must be a string of at most 500"),
    (at(2, {"kind": "checkbox", "name": "q", "help": "x" * 2001}), "items[2] 'q': help must be a string of at most 2000"),
    (at(2, {"kind": "rating", "name": "q", "min": 5, "max": 5}), "items[2] 'q': min and max of a rating must be whole numbers"),
    (at(2, {"kind": "rating", "name": "q", "min": 1.5}), "items[2] 'q': min and max of a rating must be whole numbers"),
    (at(2, {"kind": "rating", "name": "q", "min": 0, "max": 100}), "items[2] 'q': a rating has at most 100 levels"),
    (at(2, {"kind": "number", "name": "q", "min": 3, "max": 2}), "items[2] 'q': min must not be above max"),
    (at(2, {"kind": "number", "name": "q", "max": "2"}), "items[2] 'q': max must be a finite number"),
    (at(2, {"kind": "number", "name": "q", "min": float("nan")}), "items[2] 'q': min must be a finite number"),
    (at(2, {"kind": "number", "name": "q", "step": 0}), "items[2] 'q': step must be above 0"),
    (at(2, {"kind": "slider", "name": "q", "min": 0}), "items[2] 'q': a slider needs min and max with min < max"),
    (at(2, {"kind": "slider", "name": "q", "min": 1, "max": 1}), "items[2] 'q': a slider needs min and max with min < max"),
    (at(2, {"kind": "radio", "name": "q", "options": ["a b"], "useastag": 1}),
     "items[2] 'q': useastag needs every option to be a tag, and 'a b' is not"),
    (at(2, {"kind": "checkbox", "name": "q", "useastag": "file"}), "items[2] 'q': useastag must be true, 1, \"study\" or \"subject\""),
    (at(2, {"kind": "checkbox", "name": "q", "useastag": 2}), "items[2] 'q': useastag must be true, 1,"),
    (at(4, {"kind": "subform", "name": "q", "items": []}), "items[4] 'q': items must be a non-empty list of items"),
    (at(2, {"kind": "checkbox", "name": "q", "when": {"item": "side"}}), "items[2] 'q': when must be {\"item\": name, \"is\": [values]}"),
    (at(2, {"kind": "checkbox", "name": "q", "when": {"item": "side", "is": []}}), "items[2] 'q': when must be"),
    (at(2, {"kind": "checkbox", "name": "q", "when": {"item": "side", "is": [None]}}), "items[2] 'q': when must be"),
    (at(2, {"kind": "checkbox", "name": "q", "when": {"item": "nope", "is": ["a"]}}), "items[2] 'q': when: the form has no item 'nope'"),
    (at(2, {"kind": "checkbox", "name": "q", "when": {"item": "q", "is": [True]}}),
     "items[2] 'q': when: an item cannot depend on itself or on an item inside it"),
    (at(4, {"kind": "subform", "name": "q", "when": {"item": "inner", "is": [True]}, "items": [{"kind": "checkbox", "name": "inner"}]}),
     "items[4] 'q': when: an item cannot depend on itself or on an item inside it"),
    (at(2, {"kind": "checkbox", "name": "q", "when": {"item": "lesion", "is": [True]}}),
     "items[2] 'q': when: a condition cannot test 'lesion', a subform item"),
    (at(2, {"kind": "checkbox", "name": "q", "when": {"item": "mask", "is": [True]}}),
     "items[2] 'q': when: a condition cannot test 'mask', a roi item"),
    (at(2, {"kind": "checkbox", "name": "q", "when": {"item": "side", "is": ["up"]}}),
     "items[2] 'q': when: 'up' cannot be an answer to 'side'"),
    (at(2, {"kind": "checkbox", "name": "q", "when": {"item": "motion", "is": [1]}}),
     "items[2] 'q': when: 1 cannot be an answer to 'motion' (must be true or false)"),
    ({"items": [{"kind": "checkbox", "name": "a", "when": {"item": "b", "is": [True]}},
                {"kind": "checkbox", "name": "b", "when": {"item": "a", "is": [True]}}]},
     "items[0] 'a': when: the conditions form a cycle through 'a', 'b'"),
    # A cycle through a subform: 'inner' is shown only with 's', 's' only with 'x', and 'x' only with 'inner'.
    ({"items": [{"kind": "subform", "name": "s", "when": {"item": "x", "is": [True]},
                 "items": [{"kind": "checkbox", "name": "inner"}]},
                {"kind": "checkbox", "name": "x", "when": {"item": "inner", "is": [True]}}]},
     "when: the conditions form a cycle through"),
    (subforms(5), "items[0].items[0].items[0].items[0].items[0] 's0': subforms nest at most 4 deep"),
    ({"items": [{"kind": "separator"}] * 501}, "items[500]: a form has at most 500 items"),
])
def test_invalid_forms_are_refused_with_the_element_and_field_named(document: Any, message: str) -> None:
    with pytest.raises(FormError) as raised:
        parse_form(document)
    assert message in str(raised.value)
    assert isinstance(raised.value, InvalidValue)


def test_the_limits_themselves_are_allowed() -> None:
    assert parse_form(subforms(4)).item("leaf").kind is ItemKind.CHECKBOX
    assert len(parse_form({"items": [{"kind": "separator"}] * 500}).items) == 500
    assert parse_form(at(7, {"kind": "rating", "name": "q", "min": 0, "max": 99})).item("q").maximum == 99
    slider = parse_form(at(7, {"kind": "slider", "name": "q", "min": -1.5, "max": 1.5})).item("q")
    assert (slider.minimum, slider.maximum, slider.step) == (-1.5, 1.5, None)


def test_visibility_follows_conditions_subforms_and_hidden_items() -> None:
    form = parse_form(FORM)
    always = {"side", "quality", "motion", "grade", "follow", "spots", "mask"}
    assert form.visible({}) == always
    lesion = {"volume", "confidence", "centre"}
    assert form.visible({"side": "left"}) == always | lesion
    assert form.visible({"side": "right", "quality": 1}) == always
    assert form.visible({"side": "both", "quality": 2}) == always | lesion | {"remark"}
    assert form.visible({"motion": True}) == always | {"note"}
    # JSON's true is not 1, nor 1 true.
    assert "note" not in form.visible({"motion": 1})
    chain = parse_form({"items": [
        {"kind": "checkbox", "name": "a"},
        {"kind": "radio", "name": "b", "options": ["x", "y"], "when": {"item": "a", "is": [True]}},
        {"kind": "rating", "name": "c", "when": {"item": "b", "is": ["x"]}},
        {"kind": "slider", "name": "d", "min": 0, "max": 10, "when": {"item": "c", "is": [3]}},
    ]})
    assert chain.visible({"a": True, "b": "x", "c": 3}) == {"a", "b", "c", "d"}
    # 'b' keeps an answer while hidden; that answer does not show 'c'.
    assert chain.visible({"a": False, "b": "x", "c": 3}) == {"a"}


def test_answers_are_checked_and_cleaned() -> None:
    form = parse_form(FORM)
    answers = {
        "mask": {"dims": [4, 4, 2], "runs": [0, 3, 5, 2, 31, 1]},
        "side": "left", "quality": 3, "motion": False, "volume": 12, "confidence": 35.5,
        "centre": [1, -2.5, 3e2], "remark": None, "grade": "II", "follow": "no", "spots": [[0, 0, 0], [1, 2, 3]],
    }
    cleaned = check_answers(form, answers, complete=True)
    assert list(cleaned) == ["side", "quality", "motion", "volume", "confidence", "centre", "grade", "follow", "spots", "mask"]
    assert cleaned["quality"] == 3 and type(cleaned["quality"]) is int
    assert cleaned["volume"] == 12.0 and type(cleaned["volume"]) is float
    assert cleaned["centre"] == [1.0, -2.5, 300.0]
    assert cleaned["mask"] == {"dims": [4, 4, 2], "runs": [0, 3, 5, 2, 31, 1]}
    assert check_answers(form, {}, complete=False) == {}
    assert check_answers(form, {"spots": []}, complete=False) == {"spots": []}


@pytest.mark.parametrize(("name", "value", "message"), [
    ("side", "up", "answer to 'side': must be one of 'left', 'right', 'both'"),
    ("side", 1, "answer to 'side': must be one of"),
    ("quality", 6, "answer to 'quality': must be a whole number from 1 to 5"),
    ("quality", 3.0, "answer to 'quality': must be a whole number"),
    ("quality", True, "answer to 'quality': must be a whole number"),
    ("motion", 1, "answer to 'motion': must be true or false"),
    ("remark", "x" * 10_001, "answer to 'remark': must be a string of at most 10000 characters"),
    ("remark", 5, "answer to 'remark': must be a string"),
    ("volume", -1, "answer to 'volume': must be a finite number of at least 0"),
    ("volume", float("inf"), "answer to 'volume': must be a finite number"),
    ("volume", "3", "answer to 'volume': must be a finite number"),
    ("confidence", 101, "answer to 'confidence': must be a finite number from 0 to 100"),
    ("centre", [1, 2], "answer to 'centre': a point must be [x, y, z]"),
    ("centre", [1, 2, float("nan")], "answer to 'centre': a point must be [x, y, z]"),
    ("centre", [1, 2, False], "answer to 'centre': a point must be [x, y, z]"),
    ("centre", {"x": 1}, "answer to 'centre': a point must be [x, y, z]"),
    ("spots", [[1, 2, 3]] * 1001, "answer to 'spots': must be a list of at most 1000 points"),
    ("spots", [[1, 2, 3], [1, 2]], "answer to 'spots': a point must be [x, y, z]"),
    ("mask", [0, 3], "answer to 'mask': must be {\"dims\""),
    ("mask", {"dims": [4, 4, 2], "runs": [], "label": "x"}, "answer to 'mask': must be {\"dims\""),
    ("mask", {"dims": [4, 4], "runs": []}, "answer to 'mask': dims must be three positive whole numbers"),
    ("mask", {"dims": [4, 0, 2], "runs": []}, "answer to 'mask': dims must be three positive whole numbers"),
    ("mask", {"dims": [2048, 2048, 513], "runs": []}, "answer to 'mask': dims must describe at most 2147483648 voxels"),
    ("mask", {"dims": [4, 4, 2], "runs": [0, 3, 5]}, "answer to 'mask': runs must be a list of whole numbers"),
    ("mask", {"dims": [4, 4, 2], "runs": [0, 3.0]}, "answer to 'mask': runs must be a list of whole numbers"),
    ("mask", {"dims": [4, 4, 2], "runs": [0, 0]}, "answer to 'mask': the run at 0 must have a positive length"),
    ("mask", {"dims": [4, 4, 2], "runs": [-1, 2]}, "answer to 'mask': the run at -1 must start at or after 0"),
    ("mask", {"dims": [4, 4, 2], "runs": [5, 3, 2, 1]}, "answer to 'mask': the run at 2 must start at or after 8"),
    ("mask", {"dims": [4, 4, 2], "runs": [0, 3, 2, 1]}, "answer to 'mask': the run at 2 must start at or after 3"),
    ("mask", {"dims": [4, 4, 2], "runs": [30, 3]}, "answer to 'mask': the runs must stay inside the 32 voxels"),
])
def test_wrong_answers_are_refused_naming_the_item(name: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidValue) as raised:
        check_answers(parse_form(FORM), {name: value}, complete=False)
    assert message in str(raised.value)


def test_answers_must_be_an_object_naming_items_that_take_answers() -> None:
    form = parse_form(FORM)
    with pytest.raises(InvalidValue, match="must be a JSON object"):
        check_answers(form, [["side", "left"]], complete=False)
    with pytest.raises(InvalidValue, match="no item that takes an answer called 'colour', 'lesion'"):
        check_answers(form, {"side": "left", "colour": "red", "lesion": 1}, complete=False)


def test_a_complete_answer_needs_every_shown_required_item_and_drops_hidden_answers() -> None:
    form = parse_form(FORM)
    with pytest.raises(InvalidValue, match="required item 'side' has no answer"):
        check_answers(form, {"quality": 3}, complete=True)
    with pytest.raises(InvalidValue, match="required item 'quality' has no answer"):
        check_answers(form, {"side": "right", "quality": None}, complete=True)
    # 'volume' is required, and shown with side 'left': the subform that holds it is visible.
    with pytest.raises(InvalidValue, match="required item 'volume' has no answer"):
        check_answers(form, {"side": "left", "quality": 3}, complete=True)
    # With side 'right' the subform is hidden: its required item needs nothing and its answers go.
    draft = {"side": "right", "quality": 3, "confidence": 10, "remark": "old", "note": "x"}
    assert check_answers(form, draft, complete=True) == {"side": "right", "quality": 3}
    # A draft keeps answers to hidden items, and need not be complete.
    assert check_answers(form, draft, complete=False) == {"side": "right", "quality": 3, "confidence": 10.0, "remark": "old", "note": "x"}
    assert check_answers(form, {}, complete=False) == {}


def test_a_blank_text_does_not_answer_a_required_text() -> None:
    form = parse_form({"items": [{"kind": "text", "name": "finding", "required": True}]})
    with pytest.raises(InvalidValue, match="required item 'finding' has no answer"):
        check_answers(form, {"finding": "  \n"}, complete=True)
    assert check_answers(form, {"finding": " none "}, complete=True) == {"finding": " none "}


def test_answers_become_tag_changes_one_per_item_in_document_order() -> None:
    form = parse_form(FORM)
    changes = answer_tags(form, {"side": "left", "motion": True, "follow": "no"})
    assert changes == [
        (TagLevel.STUDY, {"left"}, {"right", "both"}),
        (TagLevel.SUBJECT, {"motion"}, set()),
        (TagLevel.STUDY, {"no"}, {"yes"}),
    ]
    assert answer_tags(form, {"motion": False}) == [
        (TagLevel.STUDY, set(), {"left", "right", "both"}),
        (TagLevel.SUBJECT, set(), {"motion"}),
        (TagLevel.STUDY, set(), {"yes", "no"}),
    ]
    assert answer_tags(parse_form({"items": [{"kind": "text", "name": "t"}]}), {"t": "x"}) == []
