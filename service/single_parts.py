"""Each named multipart part at most once (issue 15): a second `image` or `params` used to be
silently last-one-wins, so the request that ran was not the one that was checked by eye."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from schemas.problems import FieldError
from service.errors import ApiError

JOB_PARTS = ("image", "ground_truth", "params", "callback_url", "frame")
BATCH_PARTS = ("params", "callback_url", "archive")


def single_parts(names: tuple[str, ...]) -> Callable[[Request], Awaitable[None]]:
    """A route dependency: 400 naming the first part of `names` the form carries more than once."""

    async def check(request: Request) -> None:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return
        form = await request.form()  # parsed once per request (Starlette caches it for the route)
        for name in names:
            count = len(form.getlist(name))
            if count > 1:
                message = f"{count} parts named {name!r}; send exactly one"
                raise ApiError(
                    400,
                    "Duplicate part",
                    message,
                    code="duplicate-part",
                    errors=[FieldError(field=name, message=message)],
                )

    return check
