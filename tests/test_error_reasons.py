"""Every error kind carries a machine-readable reason, and the HTTP layer maps each kind to one status."""

from __future__ import annotations

import pytest

from conf.errors import (
    ApiError,
    BadInput,
    CollectionMoved,
    Conflict,
    Forbidden,
    NotAnImage,
    NotFound,
    NotReady,
    TooLarge,
    Unauthorized,
)
from model.images import decode_image
from service.api.errors import status_of
from tests.conftest import photo


@pytest.mark.parametrize(
    ("kind", "status", "reason"),
    [
        (BadInput, 400, "bad_input"),
        (Unauthorized, 401, "unauthorized"),
        (Forbidden, 403, "forbidden"),
        (NotFound, 404, "not_found"),
        (Conflict, 409, "conflict"),
        (TooLarge, 413, "too_large"),
        (NotAnImage, 415, "not_an_image"),
        (NotReady, 503, "not_ready"),
        (CollectionMoved, 503, "collection_moved"),
    ],
)
def test_each_kind_has_a_status_and_a_default_reason(kind: type[ApiError], status: int, reason: str) -> None:
    error = kind("message for the caller")
    assert (status_of(error), error.reason, error.msg) == (status, reason, "message for the caller")


def test_an_unmapped_kind_is_a_500() -> None:
    class Odd(ApiError):
        pass

    assert status_of(Odd("x")) == 500 and Odd("x").reason == "odd"


@pytest.mark.parametrize(
    ("data", "limits", "reason"),
    [
        (b"", {}, "empty"),
        (b"not an image at all", {}, "not_decodable"),
        (photo(1)[:200], {}, "corrupt"),
        (photo(1), {"max_bytes": 100}, "too_many_bytes"),
        (photo(1), {"max_pixels": 100}, "too_many_pixels"),
    ],
)
def test_decoding_failures_say_which_failure_they_are(data: bytes, limits: dict[str, int], reason: str) -> None:
    with pytest.raises((NotAnImage, TooLarge)) as caught:
        decode_image(data, **{"max_bytes": 10**8, "max_pixels": 10**8, **limits})
    assert caught.value.reason == reason, caught.value.msg
