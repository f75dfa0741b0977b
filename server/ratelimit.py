"""Failed sign-ins, limited per address and per name (the `limits` library's moving window, in memory).

Only failures count, and a limited caller is refused before any password is checked, so guessing costs
the guesser time and the server nothing (argon2 is deliberately slow).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import parse, storage, strategies


@dataclass(frozen=True)
class Refusal:
    message: str
    retry_after: int  # seconds


class LoginLimiter:
    def __init__(self, per_address: str = "10/5minutes", per_name: str = "5/5minutes") -> None:
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self._per_address = parse(per_address)
        self._per_name = parse(per_name)

    def check(self, address: str, name: str) -> Refusal | None:
        """A refusal when this address or this name failed too often lately; else None."""
        for limit, key, what in (
            (self._per_address, f"address:{address}", "from this device"),
            (self._per_name, f"name:{name.casefold()}", f"for {name!r}"),
        ):
            if not self._limiter.test(limit, key):
                reset = self._limiter.get_window_stats(limit, key).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                return Refusal(f"Too many failed sign-ins {what}. Try again in {wait} s.", wait)
        return None

    def failed(self, address: str, name: str) -> None:
        self._limiter.hit(self._per_address, f"address:{address}")
        self._limiter.hit(self._per_name, f"name:{name.casefold()}")
