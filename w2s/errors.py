"""The exceptions w2s raises on purpose. Each message names what went wrong and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


class W2SError(Exception):
    """Base class of every error w2s raises deliberately (the CLI prints these without a traceback)."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config: the full dotted key, the value given, what is wrong and how to fix it."""

    key: str
    value: object
    problem: str
    fix: str = ""

    def __str__(self) -> str:
        shown = repr(self.value)
        if len(shown) > 80:  # both ends kept: a long path's file name and line number are at its end
            shown = shown[:38] + "..." + shown[-39:]
        text = f"{self.key} = {shown}: {self.problem}"
        return f"{text}\n      fix: {self.fix}" if self.fix else text


class ConfigError(W2SError):
    """Every problem found in a config, reported together."""

    def __init__(self, issues: list[ConfigIssue], source: str = ""):
        self.issues = list(issues)
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"{len(self.issues)} config error(s){where}:"]
        lines += [f"  - {issue}" for issue in self.issues]
        super().__init__("\n".join(lines))

    def __reduce__(self):  # rebuilt from its issues when it crosses a process boundary (a Ray actor's error)
        return type(self), (self.issues, self.source)


class DataError(W2SError):
    """Malformed input data; the message names the file, the line (or row) and the field."""


class ClusterError(W2SError):
    """Ray could not be started or joined, or the requested resources cannot be placed."""


class WorkerError(W2SError):
    """A Ray actor died or timed out; the message names its role, rank, node and where its logs are."""


class ActorRaised(W2SError):
    """The work inside an actor raised (the actor is alive): a rerun would raise again, so it is not retried
    (``run.max_retries`` is for actors that die or hang). The message names the actor and the traceback's last
    frame."""


class RunDirError(W2SError):
    """The run directory is inconsistent with the config (for example a finished stage's config changed)."""
