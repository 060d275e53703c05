"""The pure parts of ``likestream erase``: which changelog rows are the user's likes."""

from __future__ import annotations

from pathlib import Path

from likestream.config._settings import load_settings
from likestream.runtime._erase import EraseReport, UserRows
from likestream.tables import CountRow, MemberRow, changelog_topic, member_of_key
from likestream.tables._rows import encode_count, encode_member, member_key


def member(item: str, user: str, liked: bool, offset: int) -> tuple[bytes, bytes]:
    return member_key(item, user), encode_member(MemberRow(liked, offset))


def test_member_of_key() -> None:
    assert member_of_key(member_key("post:9", "alice")) == ("post:9", "alice")
    assert member_of_key(b"c/post:9") is None
    assert member_of_key(b"w/post:9") is None
    assert member_of_key(b"m/only-one-part") is None
    assert member_of_key(b"m/\xff/alice") is None


def test_user_rows_keep_the_newest_stamp_of_the_users_rows_only() -> None:
    rows = UserRows("al")
    records = [
        member("a", "al", True, 5),
        member("b", "al", True, 6),
        member("a", "al", False, 9),
        member("b", "al", False, 3),  # older stamp than the row kept (a replayed record)
        member("c", "al", True, 7),
        member("c", "al", False, 7),  # the same stamp: the later record wins, as in recovery
        member("d", "al", True, 8),
        member("d", "xal", True, 8),  # another user whose id ends like this one's
        member("e", "bob", True, 8),
        (b"c/a", encode_count(CountRow(1, 9))),
        (b"m/f/al", b"not a row"),
    ]
    for key, value in records:
        rows.add(key, value)
    rows.add(member_key("g", "al"), encode_member(MemberRow(True, 1)))
    rows.add(member_key("g", "al"), None)  # a tombstone: no row
    rows.add(None, b"1,1")
    assert rows.liked() == ["b", "d"]
    assert set(rows.rows) == {"a", "b", "c", "d"}


def test_report() -> None:
    assert EraseReport("al").summary() == "erase al: al liked nothing; no events published"
    assert EraseReport("al", ["a", "b", "a"]).summary() == (
        "erase al: 2 items unliked (3 unlike events published and applied, 1 of them liked "
        "again during the erase); al likes nothing now"
    )


def test_changelog_topic_is_the_one_faust_declares(tmp_path: Path) -> None:
    from likestream.domain._tokens import Tokens
    from likestream.runtime._credentials import Credentials
    from likestream.runtime._faust_app import build

    settings = load_settings(data_dir=str(tmp_path), app_id="erase-unit")
    app = build(settings, Credentials(Tokens("x" * 32), "y" * 32)).app
    declared = {t.changelog_topic.get_topic_name() for t in app.tables.values()}
    assert changelog_topic("erase-unit") in declared
