"""`Redactor` (`sidecar.redact`): configured secrets and key-shaped strings never leave (pure)."""

from sidecar.redact import REDACTED, Redactor


def test_redactor_removes_key_shaped_strings_but_not_ordinary_words() -> None:
    r = Redactor(["configured-secret-value"])
    text = (
        "model sky-t1-32b-preview skeleton_keys key sk-live-abcdefghijkl "
        "aws AKIAABCDEFGHIJKLMNOP configured-secret-value google ya29.a0AfH6SMBx-token_1"
    )
    out = r.text(text)
    assert "sky-t1-32b-preview" in out
    assert "skeleton_keys" in out
    assert "sk-live-abcdefghijkl" not in out
    assert "AKIAABCDEFGHIJKLMNOP" not in out
    assert "configured-secret-value" not in out
    assert "ya29" not in out


def test_a_secret_that_contains_another_is_removed_whole() -> None:
    r = Redactor(["token", "token-with-suffix"])
    assert r.text("a token-with-suffix b") == f"a {REDACTED} b"


def test_keys_echoed_partly_masked_and_temporary_aws_keys_are_removed() -> None:
    out = Redactor([]).bytes(b"key sk-abc1****wxyz id ASIAABCDEFGHIJKLMNOP end")
    assert out == b"key " + REDACTED.encode() + b" id " + REDACTED.encode() + b" end"


def test_secrets_too_short_to_be_keys_are_not_redacted_everywhere() -> None:
    # A three-letter value would blank every occurrence of a common word.
    assert Redactor(["abc", ""]).text("abc abcd") == "abc abcd"


def test_a_key_prefix_inside_a_word_is_not_a_key() -> None:
    assert Redactor([]).text("risk-assessment-2024") == "risk-assessment-2024"
