import asyncio
import logging
from pathlib import Path

import pytest
from fakes.secret_volume import SecretVolume

from sidecar.credentials import MAX_BYTES, FileCredential, UnusableSecret, read_secret, watch


class Reloads:
    def __init__(self) -> None:
        self.outcomes: list[bool] = []

    def __call__(self, ok: bool) -> None:
        self.outcomes.append(ok)


@pytest.fixture
def volume(tmp_path: Path) -> SecretVolume:
    v = SecretVolume(tmp_path / "secret")
    v.write({"api-key": "sk-first\n"})
    return v


def test_trailing_newlines_are_stripped_and_inner_spaces_kept(tmp_path: Path) -> None:
    f = tmp_path / "k"
    f.write_bytes(b" sk key \r\n\n")
    assert read_secret(f) == " sk key "


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "is empty"),
        (b"\n\n", "is empty"),
        (b"sk-one\nsk-two\n", "more than one line"),
        (b"\xff\xfe-not-utf8", "not UTF-8"),
        (b"x" * (MAX_BYTES + 1), "larger than"),
    ],
)
def test_unusable_content_is_refused_without_echoing_it(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    f = tmp_path / "k"
    f.write_bytes(content)
    with pytest.raises(UnusableSecret, match=reason) as e:
        read_secret(f)
    assert "sk-" not in str(e.value)
    assert "not-utf8" not in str(e.value)


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UnusableSecret, match="does not exist"):
        read_secret(tmp_path / "nope")
    with pytest.raises(UnusableSecret, match="is a directory"):
        read_secret(tmp_path)


def test_unreadable_path_is_refused_with_the_os_reason(tmp_path: Path) -> None:
    # A path through a regular file fails to open even for root (CI runs as root).
    f = tmp_path / "k"
    f.write_text("sk-secret")
    with pytest.raises(UnusableSecret, match=r"cannot read .*Not a directory"):
        read_secret(f / "key")


def test_a_missing_file_at_start_raises(tmp_path: Path) -> None:
    with pytest.raises(UnusableSecret):
        FileCredential(tmp_path / "missing", "primary")


def test_value_is_read_at_start_through_the_data_symlink(volume: SecretVolume) -> None:
    assert FileCredential(volume.path("api-key"), "primary").value == "sk-first"


def test_a_kubelet_symlink_swap_is_picked_up_and_counted(volume: SecretVolume) -> None:
    reloads = Reloads()
    cred = FileCredential(volume.path("api-key"), "primary", on_reload=reloads)
    assert cred.check() is None
    volume.write({"api-key": "sk-second\n"})
    assert cred.check() is True
    assert cred.value == "sk-second"
    assert cred.check() is None
    assert reloads.outcomes == [True]


def test_an_in_place_rewrite_is_picked_up(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("first")
    cred = FileCredential(f, "inbound")
    f.write_text("second-longer")
    assert cred.check() is True
    assert cred.value == "second-longer"


def test_a_swap_to_the_same_value_is_no_reload(volume: SecretVolume) -> None:
    reloads = Reloads()
    cred = FileCredential(volume.path("api-key"), "primary", on_reload=reloads)
    volume.write({"api-key": "sk-first"})
    assert cred.check() is None
    assert reloads.outcomes == []


def test_a_bad_change_keeps_the_old_value_counts_once_and_logs_no_value(
    volume: SecretVolume, caplog: pytest.LogCaptureFixture
) -> None:
    reloads = Reloads()
    cred = FileCredential(volume.path("api-key"), "primary", on_reload=reloads)
    volume.write({"api-key": "\n"})
    with caplog.at_level(logging.ERROR, logger="sidecar.credentials"):
        assert cred.check() is False
        assert cred.check() is None
    assert cred.value == "sk-first"
    assert reloads.outcomes == [False]
    (record,) = caplog.records
    assert "primary" in record.getMessage()
    assert "is empty" in record.getMessage()
    assert "sk-first" not in record.getMessage()


def test_a_removed_file_keeps_the_old_value_until_a_good_one_returns(tmp_path: Path) -> None:
    reloads = Reloads()
    f = tmp_path / "token"
    f.write_text("first")
    cred = FileCredential(f, "inbound", on_reload=reloads)
    f.unlink()
    assert cred.check() is False
    assert cred.check() is None
    f.write_text("second")
    assert cred.check() is True
    assert (cred.value, reloads.outcomes) == ("second", [False, True])


def test_a_bad_change_then_a_good_one_recovers(volume: SecretVolume) -> None:
    reloads = Reloads()
    cred = FileCredential(volume.path("api-key"), "primary", on_reload=reloads)
    volume.write({"api-key": b"\xff"})
    cred.check()
    volume.write({"api-key": "sk-third"})
    assert cred.check() is True
    assert (cred.value, reloads.outcomes) == ("sk-third", [False, True])


async def test_watch_polls_until_cancelled(volume: SecretVolume) -> None:
    reloads = Reloads()
    cred = FileCredential(volume.path("api-key"), "primary", on_reload=reloads)
    task = asyncio.create_task(watch([cred], interval_s=0.01))
    volume.write({"api-key": "sk-watched"})
    for _ in range(200):
        if cred.value == "sk-watched":
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cred.value == "sk-watched"
    assert reloads.outcomes == [True]


async def test_watch_with_no_files_returns_at_once() -> None:
    await asyncio.wait_for(watch([]), timeout=1)
