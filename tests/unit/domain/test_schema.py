import orjson
import pytest

from likestream.domain._schema import InvalidEvent, LikeEvent, encode_event, parse_event


def record(**fields: object) -> tuple[bytes, bytes]:
    doc = {"user_id": "u42", "item_id": "post:9", "action": "like", **fields}
    doc = {k: v for k, v in doc.items() if v is not None}
    return str(doc.get("item_id", "post:9")).encode(), orjson.dumps(doc)


def test_valid_event_round_trips() -> None:
    event = LikeEvent("u42", "post:9", "unlike", "01J-abc", 1764253000123)
    assert parse_event(b"post:9", encode_event(event)) == event


def test_unknown_fields_are_ignored() -> None:
    key, value = record(extra={"nested": True}, ts=5)
    assert parse_event(key, value) == LikeEvent("u42", "post:9", "like", None, 5)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"post:9", None, "null value"),
        (b"post:9", b"{not json", "not JSON"),
        (b"post:9", b"\xff\xfe", "not JSON"),
        (b"post:9", b"[1, 2]", "not a JSON object"),
        (b"post:9", b'{"item_id": "post:9", "action": "like"}', "user_id"),
        (b"post:9", b'{"user_id": 42, "item_id": "post:9", "action": "like"}', "user_id"),
        (b"a b", b'{"user_id": "u1", "item_id": "a b", "action": "like"}', "item_id"),
        (b"post:9", b'{"user_id": "u1", "item_id": "post:9", "action": "love"}', "action"),
        (b"other", b'{"user_id": "u1", "item_id": "post:9", "action": "like"}', "key"),
        (None, b'{"user_id": "u1", "item_id": "post:9", "action": "like"}', "key"),
        (b"post:9", b'{"user_id": "u1", "item_id": "post:9", "action": "like", "ts": "x"}', "ts"),
        (b"post:9", b'{"user_id": "u1", "item_id": "post:9", "action": "like", "ts": true}', "ts"),
        (
            b"post:9",
            b'{"user_id": "u1", "item_id": "post:9", "action": "like", "event_id": 7}',
            "event_id",
        ),
    ],
)
def test_invalid_records_say_why(key: bytes | None, value: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        parse_event(key, value)


def test_ids_are_limited_to_128_characters() -> None:
    assert parse_event(*record(item_id="i" * 128)).item_id == "i" * 128
    with pytest.raises(InvalidEvent, match="item_id"):
        parse_event(*record(item_id="i" * 129))


def test_records_over_1_kib_are_invalid() -> None:
    key, value = record(padding="p" * 1000)
    assert len(key) + len(value) > 1024
    with pytest.raises(InvalidEvent, match="over 1024"):
        parse_event(key, value)


def test_the_fast_path_agrees_with_the_definition() -> None:
    """parse_event decodes with msgspec and a cache of valid ids; event_from_json is the
    definition. Random documents, valid and not, must get the same answer from both."""
    import random

    from likestream.domain._schema import event_from_json

    rng = random.Random(7)
    ids = ["u1", "post:9", "a" * 128, "a" * 129, "", "a b", "é", "x/y", "ok.-_:@", 7, None]
    values: list[object] = [*ids, True, -1, 0, 5, 1.5, "x" * 64, "x" * 65, [], {}]
    for _ in range(3000):
        doc = {
            name: rng.choice(values)
            for name in ("user_id", "item_id", "action", "event_id", "ts")
            if rng.random() < 0.9
        }
        if rng.random() < 0.7:
            doc["action"] = rng.choice(["like", "unlike", "love"])
        for name in ("user_id", "item_id"):
            if rng.random() < 0.6:
                doc[name] = rng.choice(["u1", "post:9", "a" * 128])
        raw = orjson.dumps(doc)
        try:
            want: object = event_from_json(raw)
        except InvalidEvent as exc:
            want = str(exc)
        key = doc["item_id"].encode() if isinstance(doc.get("item_id"), str) else b"?"
        try:
            got: object = parse_event(key, raw)
        except InvalidEvent as exc:
            got = str(exc)
        if isinstance(want, LikeEvent) and key != want.item_id.encode():
            want = "record key does not equal item_id"
        assert got == want, doc
