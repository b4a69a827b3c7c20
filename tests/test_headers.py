"""The header table: what crosses in which direction on which route."""

from multidict import CIMultiDict

from sidecar import headers as h


def test_understood_routes_forward_only_the_listed_caller_headers() -> None:
    caller = CIMultiDict(
        {
            "Accept": "*/*",
            "Authorization": "Bearer x",
            "Cookie": "c",
            "OpenAI-Beta": "b",
            "X-Y": "1",
        }
    )
    assert h.to_upstream(caller, passthrough=False) == {
        "accept": "*/*",
        "openai-beta": "b",
        "content-type": "application/json",
    }


def test_pass_through_forwards_all_but_credentials_cookies_and_hop_by_hop() -> None:
    caller = CIMultiDict(
        {
            "X-Custom": "1",
            "Api-Key": "k",
            "X-Goog-Api-Key": "g",
            "Cookie": "c",
            "Keep-Alive": "5",
            "X-Sidecar-Chain": "a",
        }
    )
    assert h.to_upstream(caller, passthrough=True) == {"x-custom": "1"}


def test_headers_the_connection_header_names_never_cross_either_way() -> None:
    sent = CIMultiDict({"Connection": "close, X-Custom, Accept", "X-Custom": "1", "Accept": "a"})
    assert h.to_upstream(sent, passthrough=True) == {}
    assert h.to_upstream(sent, passthrough=False) == {"content-type": "application/json"}
    answered = CIMultiDict(
        {"Connection": "x-ratelimit-limit-requests", "x-ratelimit-limit-requests": "1"}
    )
    assert h.relayed(answered, "openai") == {}
    assert "x-ratelimit-limit-requests" not in h.passed_through(answered)


def test_every_connection_header_counts_in_a_multidict_and_in_a_plain_mapping() -> None:
    twice = CIMultiDict([("Connection", "X-A"), ("connection", "x-b"), ("X-A", "1"), ("X-B", "2")])
    assert h.to_upstream(twice, passthrough=True) == {}
    plain = {"Connection": "X-A", "X-A": "1", "X-C": "3"}
    assert h.to_upstream(plain, passthrough=True) == {"x-c": "3"}


def test_each_upstream_wire_relays_its_own_prefixes() -> None:
    answered = CIMultiDict(
        {
            "x-ratelimit-remaining": "9",
            "anthropic-ratelimit-tokens": "5",
            "request-id": "r",
            "Server": "s",
        }
    )
    assert h.relayed(answered, "openai") == {"x-ratelimit-remaining": "9"}
    assert h.relayed(answered, "anthropic") == {
        "anthropic-ratelimit-tokens": "5",
        "request-id": "r",
    }


def test_pass_through_answers_keep_all_but_cookies_and_the_sidecars_own() -> None:
    answered = CIMultiDict(
        {"Set-Cookie": "s", "Date": "d", "X-Request-Id": "u", "Content-Length": "3", "X-Own": "1"}
    )
    assert h.passed_through(answered) == {"x-own": "1"}


def test_an_anthropic_upstream_keeps_anthropic_headers_only_from_anthropic_callers() -> None:
    forwarded = {"accept": "a", "openai-beta": "o", "anthropic-beta": "b"}
    kept = h.KEPT["anthropic"]
    assert h.kept_by(forwarded, kept) == {"accept": "a"}
    assert h.kept_by(forwarded, kept, "anthropic-") == {"accept": "a", "anthropic-beta": "b"}
