"""Admission control by bytes in flight: admitting, waiting, refusing, LIFO order, cancellation."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from pydantic import ValidationError

from collector.admission import MIB, AdmissionConfig, BytesAdmission
from collector.consumer import PermanentError, RetryableError


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_config_defaults_and_yaml() -> None:
    assert AdmissionConfig() == AdmissionConfig(request_limit_mib=128, waiting_limit_mib=32)
    block = yaml.safe_load("admission:\n  request_limit_mib: 64\n  waiting_limit_mib: 8\n")["admission"]
    cfg = AdmissionConfig.model_validate(block)
    admission = BytesAdmission.from_config(cfg)
    assert (admission.request_limit, admission.waiting_limit) == (64 * MIB, 8 * MIB)
    with pytest.raises(ValidationError):
        AdmissionConfig.model_validate({"request_limit_mib": -1})
    with pytest.raises(ValidationError):
        AdmissionConfig.model_validate({"waiter_limit": 10})


async def test_admits_within_the_limit_and_releases() -> None:
    admission = BytesAdmission(1, 1)
    async with admission.acquire(MIB // 2), admission.acquire(MIB // 2):
        assert admission.in_flight_bytes == MIB
    assert admission.in_flight_bytes == 0
    with pytest.raises(ValueError, match="boom"):
        async with admission.acquire(100):
            raise ValueError("boom")
    assert admission.in_flight_bytes == 0  # released on error too


async def test_waits_until_room_frees_up() -> None:
    admission = BytesAdmission(1, 1)
    order: list[str] = []
    release_first = asyncio.Event()

    async def hold(name: str, n: int, until: asyncio.Event | None = None) -> None:
        async with admission.acquire(n):
            order.append(name)
            if until is not None:
                await until.wait()

    first = asyncio.create_task(hold("first", MIB, release_first))
    await settle()
    second = asyncio.create_task(hold("second", MIB // 4))
    await settle()
    assert order == ["first"] and not second.done()
    assert admission.waiting_bytes == MIB // 4
    release_first.set()
    await asyncio.gather(first, second)
    assert order == ["first", "second"]
    assert admission.in_flight_bytes == 0 and admission.waiting_bytes == 0


async def test_refuses_when_too_much_is_waiting() -> None:
    admission = BytesAdmission(1, 0.5)
    gate = asyncio.Event()

    async def hold(n: int) -> None:
        async with admission.acquire(n):
            await gate.wait()

    holder = asyncio.create_task(hold(MIB))
    await settle()
    waiter = asyncio.create_task(hold(MIB // 2))  # exactly fills the waiting limit
    await settle()
    with pytest.raises(RetryableError, match="too much pending data") as info:
        async with admission.acquire(1):
            pass
    assert info.value.throttled and info.value.retryable
    gate.set()
    await asyncio.gather(holder, waiter)


async def test_a_request_larger_than_the_limit_is_refused_for_good() -> None:
    admission = BytesAdmission(1, 32)
    with pytest.raises(PermanentError, match="too large"):
        async with admission.acquire(MIB + 1):
            pass
    assert admission.in_flight_bytes == 0 and admission.waiting_bytes == 0


async def test_newest_waiter_goes_first() -> None:
    admission = BytesAdmission(1, 3)
    gate = asyncio.Event()
    admitted: list[int] = []

    async def hold(i: int, n: int, until: asyncio.Event | None = None) -> None:
        async with admission.acquire(n):
            admitted.append(i)
            if until is not None:
                await until.wait()

    holder = asyncio.create_task(hold(0, MIB, gate))
    await settle()
    waiters = []
    for i in (1, 2, 3):
        waiters.append(asyncio.create_task(hold(i, MIB)))
        await settle()
    gate.set()
    await asyncio.gather(holder, *waiters)
    assert admitted == [0, 3, 2, 1]


async def test_a_cancelled_waiter_gives_back_its_place() -> None:
    admission = BytesAdmission(1, 1)
    gate = asyncio.Event()

    async def hold(n: int, until: asyncio.Event | None = None) -> None:
        async with admission.acquire(n):
            if until is not None:
                await until.wait()

    holder = asyncio.create_task(hold(MIB // 2, gate))
    await settle()
    big = asyncio.create_task(hold(MIB))  # waits: 0.5 + 1 > 1
    await settle()
    small = asyncio.create_task(hold(MIB // 4))  # fits at once next to the holder
    await settle()
    assert small.done()
    assert admission.waiting_bytes == MIB
    big.cancel()
    await asyncio.gather(big, return_exceptions=True)
    assert admission.waiting_bytes == 0 and admission.in_flight_bytes == MIB // 2
    gate.set()
    await holder
    assert admission.in_flight_bytes == 0


async def test_cancelled_just_after_being_admitted_releases() -> None:
    admission = BytesAdmission(1, 1)
    holding = admission.acquire(MIB)
    await holding.__aenter__()
    waiter = asyncio.create_task(admission.acquire(MIB).__aenter__())
    await settle()
    assert admission.waiting_bytes == MIB
    await holding.__aexit__(None, None, None)  # admits the waiter, which has not run yet
    assert admission.in_flight_bytes == MIB
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert waiter.cancelled()
    assert admission.in_flight_bytes == 0 and admission.waiting_bytes == 0


async def test_zero_request_limit_disables_admission() -> None:
    admission = BytesAdmission(0, 0)
    assert not admission.enabled
    async with admission.acquire(10 * 1024 * MIB):
        assert admission.in_flight_bytes == 0
