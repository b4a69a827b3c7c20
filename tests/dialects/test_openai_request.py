"""Reading an OpenAI Chat Completions request for block-based targets
(`sidecar.dialects.openai_request`), with toy block shapes so that the reading itself is tested,
not either target's shapes (pure)."""

import dataclasses
from typing import Any

import pytest

from sidecar.dialects.errors import TranslationError
from sidecar.dialects.openai_request import (
    BlockShapes,
    arguments_object,
    data_uri,
    file_data,
    function_of,
    json_schema_of,
    split_messages,
    text_blocks,
)

JSON = dict[str, Any]

SHAPES = BlockShapes(
    text=lambda t: {"text": t},
    document=lambda f, where, i: {"doc": f.get("file_data"), "at": where, "i": i},
    image=lambda u, where: {"image": u.get("url"), "at": where},
    tool_use=lambda i, n, args: {"use": i, "name": n, "input": args},
    tool_result=lambda i, blocks: {"result": i, "content": blocks},
)


def split(*messages: JSON, shapes: BlockShapes = SHAPES) -> tuple[list[JSON], list[JSON]]:
    return split_messages(list(messages), shapes)


def test_system_and_developer_messages_are_hoisted_in_order() -> None:
    system, turns = split(
        {"role": "system", "content": "one"},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": [{"type": "text", "text": "two"}]},
    )
    assert system == [{"text": "one"}, {"text": "two"}]
    assert turns == [{"role": "user", "content": [{"text": "hi"}]}]


def test_consecutive_turns_of_one_role_merge_and_tool_results_are_user_turns() -> None:
    _, turns = split(
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "function": {"name": "f"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "42"},
        {"role": "user", "content": "thanks"},
    )
    assert turns == [
        {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
        {"role": "assistant", "content": [{"use": "t1", "name": "f", "input": {}}]},
        {
            "role": "user",
            "content": [{"result": "t1", "content": [{"text": "42"}]}, {"text": "thanks"}],
        },
    ]


def test_a_trailing_prefill_loses_its_trailing_whitespace_or_goes_if_nothing_is_left() -> None:
    _, turns = split({"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure, "})
    assert turns[-1] == {"role": "assistant", "content": [{"text": "Sure,"}]}
    _, turns = split({"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "})
    assert turns == [{"role": "user", "content": [{"text": "hi"}]}]


def test_an_assistant_turn_before_the_last_keeps_its_whitespace() -> None:
    _, turns = split(
        {"role": "assistant", "content": "a "},
        {"role": "user", "content": "b "},
    )
    assert turns[0]["content"] == [{"text": "a "}]
    assert turns[1]["content"] == [{"text": "b "}]


def test_empty_contents_make_no_blocks_and_no_turns() -> None:
    _, turns = split({"role": "user", "content": ""}, {"role": "user", "content": None})
    assert turns == []


def test_a_refusal_is_the_text_of_an_assistant_turn_without_content() -> None:
    _, turns = split({"role": "assistant", "refusal": "I can't"}, {"role": "user", "content": "ok"})
    assert turns[0]["content"] == [{"text": "I can't"}]


def test_user_images_and_files_go_to_the_targets_shapes_with_where_they_were() -> None:
    _, turns = split(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "see"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,BB=="}},
            ],
        }
    )
    assert turns[0]["content"] == [
        {"text": "see"},
        {"image": "data:image/png;base64,AA==", "at": "messages[0].content[1]"},
        {"doc": "data:application/pdf;base64,BB==", "at": "messages[0].content[2]", "i": 2},
    ]


def test_the_mark_hook_gets_each_block_and_the_part_it_came_from() -> None:
    def mark(block: JSON, part: JSON) -> JSON:
        return {**block, "cached": "cache_control" in part}

    shapes = dataclasses.replace(SHAPES, mark=mark)
    parts = [{"type": "text", "text": "a", "cache_control": {}}, {"type": "text", "text": "b"}]
    _, turns = split({"role": "user", "content": parts}, shapes=shapes)
    assert turns[0]["content"] == [{"text": "a", "cached": True}, {"text": "b", "cached": False}]


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "function", "content": "x"}, "messages[0].role"),
        ({"role": "user", "content": [{"type": "input_audio"}]}, "messages[0].content[0]"),
        ({"role": "user", "content": [{"type": "video"}]}, "messages[0].content[0]"),
        ({"role": "system", "content": [{"type": "image_url"}]}, "messages[0].content"),
        (
            {"role": "assistant", "tool_calls": [{"function": {"arguments": "[1]"}}]},
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
    ids=["role", "audio", "unknown-part", "image-in-system", "arguments"],
)
def test_what_cannot_be_read_names_the_parameter(message: JSON, param: str) -> None:
    with pytest.raises(TranslationError) as e:
        split(message)
    assert e.value.param == param


def test_a_legacy_function_call_is_refused_only_by_targets_that_say_so() -> None:
    message = {"role": "assistant", "content": "x", "function_call": {"name": "f"}}
    assert split(message)[1][0]["content"] == [{"text": "x"}]
    strict = dataclasses.replace(SHAPES, rejects_function_call=True)
    with pytest.raises(TranslationError) as e:
        split(message, shapes=strict)
    assert e.value.param == "messages[0]"


def test_refusal_parts_are_text_and_empty_parts_are_dropped() -> None:
    parts = [{"type": "refusal", "refusal": "no"}, {"type": "text", "text": ""}]
    assert text_blocks(parts, "x", SHAPES) == [{"text": "no"}]


@pytest.mark.parametrize(
    ("arguments", "parsed"), [(None, {}), ("", {}), ("  ", {}), ('{"a": 1}', {"a": 1})]
)
def test_tool_call_arguments_are_a_json_object_or_nothing(arguments: Any, parsed: JSON) -> None:
    assert arguments_object(arguments, "x") == parsed


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"text"'])
def test_tool_call_arguments_that_are_not_a_json_object_are_refused(arguments: str) -> None:
    with pytest.raises(TranslationError) as e:
        arguments_object(arguments, "here")
    assert e.value.param == "here"


def test_files_must_carry_their_data() -> None:
    assert file_data({"file_data": "data:x;base64,AA"}, "f") == "data:x;base64,AA"
    with pytest.raises(TranslationError, match="file_id"):
        file_data({"file_id": "file-1"}, "f")


def test_a_data_uri_gives_its_lower_cased_media_type_and_still_encoded_data() -> None:
    assert data_uri("data:Image/PNG;base64,AAAA", "x", expected="e") == ("image/png", "AAAA")
    for url in ("https://x/y.png", "data:image/png,AAAA", "data:image/png;base64"):
        with pytest.raises(TranslationError, match="only data URIs"):
            data_uri(url, "x", expected="only data URIs")


def test_only_function_tools_are_read() -> None:
    assert function_of({"function": {"name": "f"}}, 0) == {"name": "f"}
    assert function_of({"type": "function"}, 0) == {}
    with pytest.raises(TranslationError) as e:
        function_of({"type": "code_interpreter"}, 2)
    assert e.value.param == "tools[2].type"


def test_response_format_is_a_json_schema_plain_text_or_refused() -> None:
    assert json_schema_of(None) is None
    assert json_schema_of({"type": "text"}) is None
    assert json_schema_of({"type": "json_schema", "json_schema": {"name": "s"}}) == {"name": "s"}
    with pytest.raises(TranslationError) as e:
        json_schema_of({"type": "json_object"})
    assert e.value.param == "response_format"
