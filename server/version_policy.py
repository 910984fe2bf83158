"""Which of a model's versions to serve: ``latest[:N]``, ``all`` or ``specific:V[,V...]``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_POLICY = re.compile(r"^(latest|all|specific)(?::(\d+(?:,\d+)*))?$")


@dataclass(frozen=True)
class VersionPolicy:
    """Which of a model's versions to serve: ``latest[:N]``, ``all`` or ``specific:V[,V...]``."""

    kind: Literal["latest", "all", "specific"] = "latest"
    latest_count: int = 1
    versions: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        match = _POLICY.match(text.strip())
        numbers = tuple(int(n) for n in match.group(2).split(",")) if match and \
            match.group(2) else ()
        if match is None or (match.group(1) == "all" and numbers) or \
                (match.group(1) == "specific" and not numbers) or any(n < 1 for n in numbers) \
                or (match.group(1) == "latest" and len(numbers) > 1):
            raise ValueError(f"invalid version policy {text!r}: use latest, latest:N, all or "
                             "specific:V1,V2")
        kind: Literal["latest", "all", "specific"] = match.group(1)  # type: ignore[assignment]
        if kind == "latest":
            return cls(kind, numbers[0] if numbers else 1)
        return cls(kind, versions=tuple(sorted(set(numbers))))

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of ``available`` (ascending)."""
        if self.kind == "all":
            return list(available)
        if self.kind == "specific":
            return [v for v in available if v in self.versions]
        return sorted(available)[-self.latest_count:]

    def __str__(self) -> str:
        if self.kind == "latest":
            return "latest" if self.latest_count == 1 else f"latest:{self.latest_count}"
        if self.kind == "all":
            return "all"
        return "specific:" + ",".join(map(str, self.versions))
