"""No user enumeration: a scanner learns nothing by comparing answers for names it tries.

svwar's method: send a REGISTER (or INVITE) for a name that surely does not exist, keep
the answer as the fingerprint of "no such user", then flag every name answered otherwise
(SIPVicious svwar, PEERS.md). So every REGISTER is challenged before the user is looked
up, wrong credentials get one answer whoever they name, and a call from outside to a name
we do not have is answered as one to a user of ours who cannot be reached.
"""

from __future__ import annotations

import pytest
from edgewire import Host
from sipua import Ua

from sipwake.server import Server
from sipwake.sip.auth import answer_challenge, parse_challenge
from sipwake.sip.message import Response

pytestmark = pytest.mark.timeout(20)


def _shape(response: Response) -> tuple[int, str, list[str]]:
    """What tells two answers apart, minus what must differ (tags, nonces)."""
    names = sorted({name.lower() for name, _ in response.headers})
    return response.status, response.reason, names


def _challenge_shape(response: Response) -> list[str]:
    out = []
    for value in response.headers.get_all("WWW-Authenticate"):
        challenge = parse_challenge(value)
        out.append(f"{challenge.realm} {challenge.algorithm} {challenge.qop} {challenge.stale}")
    return out


async def _register(ua: Ua, user: str, password: str | None) -> Response:
    """A REGISTER for ``user`` from ``ua``; with ``password``, the challenge answered."""
    request = ua.request("REGISTER", "sip:lab.test", to=f"<sip:{user}@lab.test>")
    request.headers.set("From", f"<sip:{user}@lab.test>;tag=r")
    ua.send(request)
    first = await ua.expect(401)
    assert isinstance(first, Response)
    if password is None:
        return first
    challenges = [parse_challenge(v) for v in first.headers.get_all("WWW-Authenticate")]
    creds = answer_challenge(
        challenges, username=user, password=password, method="REGISTER", uri="sip:lab.test",
        ids=ua.ids,
    )  # fmt: skip
    retry = ua.request(
        "REGISTER",
        "sip:lab.test",
        to=f"<sip:{user}@lab.test>",
        call_id=request.call_id,
        extra=f"Authorization: {creds}\r\n",
    )
    retry.headers.set("From", f"<sip:{user}@lab.test>;tag=r")
    ua.send(retry)
    while True:
        answer = await ua.queue.get()
        if isinstance(answer, Response) and answer.cseq.seq == retry.cseq.seq:
            return answer


async def test_register_unknown_and_known_user_get_the_same_challenge(
    edge: Server, phones: dict[str, Ua]
) -> None:
    ua = phones["alice"]
    unknown = await _register(ua, "dave", None)
    known = await _register(ua, "bob", None)
    assert _shape(unknown) == _shape(known)
    assert _challenge_shape(unknown) == _challenge_shape(known)


async def test_wrong_credentials_get_one_answer_whoever_they_name(
    edge: Server, phones: dict[str, Ua]
) -> None:
    ua = phones["alice"]
    unknown = await _register(ua, "dave", "guess")
    known = await _register(ua, "bob", "guess")
    assert unknown.status == known.status == 403
    assert _shape(unknown) == _shape(known)


async def test_control_right_credentials_register(edge: Server, phones: dict[str, Ua]) -> None:
    answer = await _register(phones["alice"], "bob", "bob-pw")
    assert answer.status == 200


@pytest.mark.parametrize("method", ["INVITE", "MESSAGE", "OPTIONS"])
async def test_request_from_outside_to_unknown_user_looks_like_unreachable_user(
    edge: Server, attacker: Host, method: str
) -> None:
    answers = []
    for user in ("dave", "carol"):  # carol is ours, but has no device registered
        attacker.send(
            attacker.request(
                method,
                f"sip:{user}@lab.test",
                from_="<sip:scanner@127.0.0.2>;tag=atk",
                to=f"<sip:{user}@lab.test>",
            )
        )
        answers.append(await attacker.final())
    unknown, known = answers
    assert _shape(unknown) == _shape(known)
    assert unknown.status == 480


async def test_control_call_from_outside_reaches_a_registered_user(
    edge: Server, phones: dict[str, Ua], attacker: Host
) -> None:
    bob = phones["bob"]
    await bob.register()
    attacker.send(
        attacker.request(
            "INVITE",
            "sip:bob@lab.test",
            from_="<sip:friend@127.0.0.2>;tag=f",
            to="<sip:bob@lab.test>",
        )
    )
    assert (await bob.expect("INVITE")).from_.tag == "f"
