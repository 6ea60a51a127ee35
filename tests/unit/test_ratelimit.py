"""Rate limits (sipwake.proxy.ratelimit) on hand-moved time: token buckets, wake pushes
refused past the limit while foreground phones still ring, dropped request floods."""

from __future__ import annotations

import pytest

from sipwake.node import Limited
from sipwake.proxy.ratelimit import Rate, RateLimiter, parse_rate
from sipwake.sip.peer import Peer
from tests.unit.wakelab import UDP, Phone, WakeLab, open_node

TOKEN = "a1b2c3d4" * 8
OUTSIDE = Peer(transport="udp", host="198.51.100.66", port=5060)
ELSEWHERE = Peer(transport="udp", host="198.51.100.77", port=5060)


def test_bucket_allows_a_burst_then_refills_at_its_rate() -> None:
    limit = RateLimiter(Rate(count=5, per_s=60))
    assert [limit.allow("k", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not limit.allow("k", 11.0)  # 11 s: 0.92 of a token
    assert limit.allow("k", 12.5)  # one token per 12 s
    assert not limit.allow("k", 12.6)
    assert limit.allow("other", 12.6)  # keys are independent
    assert limit.refused == 3
    assert limit.top() == [("k", 3)]


def test_refusals_are_reported_on_the_first_tenth_hundredth() -> None:
    limit = RateLimiter(Rate(count=1, per_s=1000))
    limit.allow("k", 0.0)
    reported = []
    for n in range(1, 1001):
        assert not limit.allow("k", 0.0)
        if limit.should_report("k"):
            reported.append(n)
    assert reported == [1, 10, 100, 1000]


def test_bucket_table_stays_bounded_under_a_flood_of_new_keys() -> None:
    limit = RateLimiter(Rate(count=10, per_s=1), max_keys=100)
    for n in range(10_000):
        limit.allow(f"spoofed-{n}", n * 1e-4)
    assert len(limit) <= 100


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("5/60s", Rate(count=5, per_s=60)),
        ("300/1", Rate(count=300, per_s=1)),
        (" 2/0.5s ", Rate(count=2, per_s=0.5)),
    ],
)
def test_parse_rate(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["5", "0/60s", "5/0s", "x/60s", "5/-1s", "5/fast"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="expected COUNT/SECONDS"):
        parse_rate(text)


def _sleeping_bob(lab: WakeLab) -> Phone:
    phone = Phone(
        user="bob", port=7001, instance="urn:uuid:phone-1", token=TOKEN, remote="5a6b7c8d" * 8
    )
    assert lab.register(phone).status == 200
    lab.suspend(phone)
    return phone


def test_wake_pushes_from_one_source_are_limited_per_user() -> None:
    """An outside caller cannot make a sleeping phone ring forever: past the limit the
    call goes on without a push (iOS punishes apps that get floods of VoIP pushes)."""
    lab = WakeLab(settings={"wake_pushes_per_source": Rate(count=3, per_s=60)})
    _sleeping_bob(lab)
    for _ in range(5):
        lab.call("bob", source=OUTSIDE)
        lab.advance(1)
    assert len(lab.pushes("call")) == 3
    assert lab.steps().count("push-refused") == 2
    limited = [o for o in lab.outputs if isinstance(o, Limited)]
    assert [o.refused for o in limited] == [1]  # logged once, not per call
    assert limited[0].key == "198.51.100.66 -> sip:bob@lab.test"
    assert limited[0].what == "wake pushes"
    # Another source is not held back by the first one's calls.
    lab.call("bob", source=ELSEWHERE)
    assert len(lab.pushes("call")) == 4
    # The first source gets a push again once its bucket refills (one per 20 s).
    lab.advance(20)
    lab.call("bob", source=OUTSIDE)
    assert len(lab.pushes("call")) == 5


def test_a_refused_wake_still_rings_foreground_devices() -> None:
    lab = WakeLab(settings={"wake_pushes_per_source": Rate(count=1, per_s=60)})
    _sleeping_bob(lab)
    desk = Phone(user="bob", port=7002, transport="udp")
    assert lab.register(desk).status == 200
    lab.call("bob", source=OUTSIDE)
    lab.call("bob", source=OUTSIDE)
    assert len(lab.pushes("call")) == 1
    assert len(lab.invites_to(desk.port)) == 2  # both calls ring the desk phone


def test_calls_that_push_nobody_do_not_use_up_the_limit() -> None:
    lab = WakeLab(settings={"wake_pushes_per_source": Rate(count=1, per_s=60)})
    desk = Phone(user="bob", port=7002, transport="udp")
    assert lab.register(desk).status == 200
    for _ in range(3):
        lab.call("bob", source=OUTSIDE)
    assert "push-refused" not in lab.steps()
    lab.unregister = None
    _sleeping_bob(lab)
    lab.call("bob", source=OUTSIDE)
    assert len(lab.pushes("call")) == 1


def test_wake_pushes_per_user_from_anywhere() -> None:
    lab = WakeLab(settings={"wake_pushes_per_user": Rate(count=2, per_s=60)})
    _sleeping_bob(lab)
    for n in range(4):
        lab.call("bob", source=Peer(transport="udp", host=f"203.0.113.{n + 1}", port=5060))
    assert len(lab.pushes("call")) == 2


def test_message_pushes_count_too_and_the_message_is_kept() -> None:
    lab = WakeLab(settings={"wake_pushes_per_source": Rate(count=1, per_s=60)})
    _sleeping_bob(lab)
    lab.message("bob", "one", source=OUTSIDE)
    lab.message("bob", "two", source=OUTSIDE)
    assert len(lab.pushes("message")) == 1
    assert lab.node.held_messages("sip:bob@lab.test") == 2  # delivered when bob wakes


OPTIONS = (
    "OPTIONS sip:lab.test SIP/2.0\r\nVia: SIP/2.0/UDP {host}:5060;branch=z9hG4bKo{n}\r\n"
    "From: <sip:x@lab.test>;tag=o{n}\r\nTo: <sip:lab.test>\r\nCall-ID: o{n}\r\n"
    "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def _options(node: object, source: Peer, n: int, now: float) -> list[object]:
    from sipwake.node import Node

    assert isinstance(node, Node)
    data = OPTIONS.format(host=source.host, n=n).encode()
    return list(node.receive(data, source, UDP, now))


def test_request_flood_from_one_source_is_dropped_unanswered() -> None:
    node = open_node(UDP, requests_per_source=Rate(count=10, per_s=1))
    answered = sum(bool(_options(node, OUTSIDE, n, 5.0)) for n in range(50))
    # Ten served; of the 40 refused, the 1st and the 10th give a Limited for the log.
    assert answered == 10 + 2
    assert node.request_limit is not None
    assert node.request_limit.refused == 40
    assert _options(node, ELSEWHERE, 99, 5.0)  # another source is served
    assert _options(node, OUTSIDE, 100, 6.0)  # a second later, ten more


def test_trusted_sources_are_not_limited() -> None:
    node = open_node(
        UDP, requests_per_source=Rate(count=10, per_s=1), trusted_sources=("198.51.100.0/24",)
    )
    assert all(_options(node, OUTSIDE, n, 5.0) for n in range(50))
