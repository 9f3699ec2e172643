"""Reliability suites (issue 6): each is a function taking a size and returning
a :class:`SuiteResult`. The tests run them small; ``bench/reliability.py`` runs
them full size and prints the figures that docs/reliability.md records."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SuiteResult:
    """Cases tried and every failure seen (a failure is a defect, never expected)."""

    name: str
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    figures: dict[str, object] = field(default_factory=dict)

    def fail(self, message: str) -> None:
        if len(self.failures) < 50:
            self.failures.append(message)
        else:
            self.figures["failures not listed"] = int(self.figures.get("failures not listed", 0)) + 1

    def fsck(self, tb, *tenants) -> None:
        """Every problem ``tarbox fsck`` finds in ``tenants`` is a failure."""
        for tenant in tenants:
            for report in tb.fsck(tenant):
                for p in report.problems:
                    self.fail(f"fsck {report.tenant}: {p.check}: {p.detail}")

    @property
    def ok(self) -> bool:
        return not self.failures
