"""Validation results: every failure with key, rule, expected and found."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Failure:
    """One broken rule."""

    key: str
    rule: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.key}: {self.rule}: expected {self.expected}, found {self.found}"


@dataclass
class Report:
    """The outcome of validating one source against one contract."""

    contract: str
    source: str
    failures: list[Failure] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no rule failed."""
        return not self.failures

    def add(self, key: str, rule: str, expected: object, found: object) -> None:
        """Record a failure."""
        self.failures.append(Failure(key, rule, str(expected), str(found)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "contract": self.contract,
            "source": self.source,
            "ok": self.ok,
            "checked": list(self.checked),
            "failures": [asdict(f) for f in self.failures],
        }

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        """Human-readable form: a verdict line, then one line per failure."""
        verdict = "PASS" if self.ok else f"FAIL ({len(self.failures)} problem(s))"
        lines = [f"{self.source}: {self.contract}: {verdict}"]
        lines += [f"  - {failure}" for failure in self.failures]
        return "\n".join(lines)
