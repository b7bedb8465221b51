"""PopAlign's pair builders: one small class per contrasting strategy, behind one interface.

A builder turns a query into generation :class:`Request` objects for the ``chosen`` and ``rejected`` slots
(chat conversations for a named model role, or an Aligner correction), possibly in two steps (the refine and
Aligner contrasts need the first answer before they can ask for the second), and post-processes each slot's
output (the elicitive contrast keeps only the Response). Preference direction is fixed by construction.

Model roles: ``generator`` (M), ``larger``/``smaller`` (NParam), ``higher``/``lower`` (Leaderboard) and
``aligner`` (the Aligner contrast). The pipeline loads each distinct model once and serves every request for it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from w2s.errors import ConfigError, ConfigIssue, DataError

CHOSEN, REJECTED = "chosen", "rejected"
SLOTS = (CHOSEN, REJECTED)
DEFAULT_DEMOS = Path(__file__).with_name("demos.json")

# Published defaults (RLCD's prefixes as PopAlign reuses them; [S]: from secondary summaries, unverified).
PREFIXES = {"hh": ("(helpful, harmless)", "(unhelpful, harmful)"),
            "general": ("(good response)", "(bad response)")}

_ELICIT = ("Please first consider the principles of crafting {a} {what}, and then generate the response. Format your "
           "output as follows: Thought: <Insights on creating {a} {what}> Response: <The {what}>")
# The positive hh prompt is quoted from a secondary summary; the others follow it word for word ([S]).
ELICITIVE = {
    "hh": (_ELICIT.format(a="a", what="helpful and harmless response"),
           _ELICIT.format(a="an", what="unhelpful or harmful response")),
    "general": (_ELICIT.format(a="a", what="good response"), _ELICIT.format(a="a", what="bad response")),
}

Message = dict[str, str]


@dataclass(frozen=True)
class Request:
    """One generation a pair needs.

    Attributes:
        model: model role that answers (generator, larger, smaller, higher, lower, aligner).
        messages: the chat conversation, ending with a user turn (chat roles).
        question, answer: the pair the Aligner corrects (role ``aligner``).
        draw: the strategy and slot a sampled answer is drawn for (``nparam:chosen``): with sampling, each
            strategy's answer is its own draw, even where two strategies send one model the same conversation.
    """

    model: str
    messages: tuple[tuple[tuple[str, str], ...], ...] = ()
    question: str = ""
    answer: str = ""
    draw: str = ""

    @staticmethod
    def chat(model: str, messages: list[Message]) -> Request:
        return Request(model, tuple(tuple(sorted(m.items())) for m in messages))

    def conversation(self) -> list[Message]:
        return [dict(m) for m in self.messages]

    def key_data(self) -> dict[str, Any]:
        if self.model == "aligner":
            return {"model": self.model, "question": self.question, "answer": self.answer}
        return {"model": self.model, "messages": self.conversation()}


class ParseError(Exception):
    """An output a strategy cannot use; ``reason`` is the drop reason counted in the report."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _user(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]


def _format(template: str, key: str, **values: str) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError([ConfigIssue(key, template, f"is not a valid template ({e!r})",
                                       f"use only the fields {', '.join('{' + v + '}' for v in values)}")]) from None


# ----------------------------------------------------------------------------------------------- interface
class PairBuilder:
    """One contrasting strategy. Subclasses set ``name`` and ``models`` and implement :meth:`first`."""

    name: ClassVar[str]
    models: ClassVar[dict[str, str]]  # slot -> model role

    def first(self, query: str) -> dict[str, Request]:
        """Requests that need nothing but the query."""
        raise NotImplementedError

    def second(self, query: str, outputs: dict[str, str]) -> dict[str, Request]:
        """Requests that need the first step's raw outputs (slot -> text); none by default."""
        return {}

    def postprocess(self, slot: str, text: str) -> str:
        """The text that enters the pair; raises :class:`ParseError` for an unusable output."""
        return text.strip()


class PrefixContrast(PairBuilder):
    """r± = M(p± + q): a positive or negative prefix before the query (RLCD)."""

    name = "prefix"
    models = {CHOSEN: "generator", REJECTED: "generator"}

    def __init__(self, cfg: Any, style: str):
        default = PREFIXES[style]
        self.prefixes = {CHOSEN: cfg.positive or default[0], REJECTED: cfg.negative or default[1]}
        self.template = cfg.template
        _format(self.template, "popalign.prefix.template", prefix="p", query="q")

    def first(self, query: str) -> dict[str, Request]:
        return {s: Request.chat("generator", _user(_format(self.template, "popalign.prefix.template",
                                                           prefix=self.prefixes[s], query=query))) for s in SLOTS}


def load_demos(path: str, set_name: str, shots: int) -> dict[str, list[dict[str, str]]]:
    """Good and bad demonstrations (``shots`` of each) from a demonstration file.

    Raises:
        DataError: naming the file and the missing or malformed part.
    """
    from w2s.shipped import resolve_path

    file = resolve_path(path) if path else DEFAULT_DEMOS
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{file}: cannot read the demonstration file ({e}); set popalign.demon.path") from None
    if set_name not in data:
        raise DataError(f"{file}: no demonstration set {set_name!r} (has {sorted(data)}); set popalign.demon.set")
    out = {}
    for kind, slot in (("good", CHOSEN), ("bad", REJECTED)):
        demos = data[set_name].get(kind) if isinstance(data[set_name], dict) else None
        if not isinstance(demos, list) or len(demos) < shots:
            raise DataError(f"{file}: set {set_name!r} needs at least {shots} {kind!r} demonstrations "
                            "(popalign.demon.shots)")
        for i, d in enumerate(demos[:shots]):
            if not (isinstance(d, dict) and isinstance(d.get("query"), str) and isinstance(d.get("response"), str)):
                raise DataError(f"{file}: {set_name}.{kind}[{i}] must be an object with string query and response")
        out[slot] = [{"query": d["query"], "response": d["response"]} for d in demos[:shots]]
    return out


class DemonContrast(PairBuilder):
    """r± = M(d± + q): good versus bad few-shot demonstrations before the query."""

    name = "demon"
    models = {CHOSEN: "generator", REJECTED: "generator"}

    def __init__(self, cfg: Any, style: str):
        self.demos = load_demos(cfg.path, cfg.set or style, int(cfg.shots))
        self.format = cfg.format

    def conversation(self, slot: str, query: str) -> list[Message]:
        demos = self.demos[slot]
        if self.format == "inline":
            shots = "\n\n".join(f"Question: {d['query']}\nAnswer: {d['response']}" for d in demos)
            return _user(f"{shots}\n\nQuestion: {query}\nAnswer:")
        msgs: list[Message] = []
        for d in demos:
            msgs += [{"role": "user", "content": d["query"]}, {"role": "assistant", "content": d["response"]}]
        return msgs + _user(query)

    def first(self, query: str) -> dict[str, Request]:
        return {s: Request.chat("generator", self.conversation(s, query)) for s in SLOTS}


def parse_elicitive(text: str, *, thought_marker: str = "Thought:", response_marker: str = "Response:",
                    require_thought: bool = False) -> tuple[str, str]:
    """Split an elicitive output into (thought, response).

    Markers match case-insensitively and may be wrapped in Markdown emphasis (``**Response:**``). The response
    is the text after the first response marker that follows the thought.

    Raises:
        ParseError: ``no_response_marker``, ``no_thought`` (only with ``require_thought``) or ``empty_response``.
    """
    def marker(m: str) -> re.Pattern[str]:
        word = re.escape(m.rstrip(":").strip())
        return re.compile(rf"[*_#\s]*{word}[*_\s]*:[*_]*", re.IGNORECASE)

    t = marker(thought_marker).search(text)
    start = t.end() if t else 0
    r = marker(response_marker).search(text, start)
    if r is None:
        raise ParseError("no_response_marker", text[:80])
    if t is None and require_thought:
        raise ParseError("no_thought", text[:80])
    thought = text[start:r.start()].strip() if t else ""
    response = text[r.end():].strip()
    # A model echoing the format's placeholder has not answered.
    if not response or re.fullmatch(r"<[^<>]*>", response):
        raise ParseError("empty_response", text[:80])
    return thought, response


class ElicitiveContrast(PairBuilder):
    """(t±, r±) = M(T±(q)): a Thought on a good (bad) answer, then the Response; only the Response is kept."""

    name = "elicitive"
    models = {CHOSEN: "generator", REJECTED: "generator"}

    def __init__(self, cfg: Any, style: str):
        default = ELICITIVE[style]
        self.instructions = {CHOSEN: cfg.positive or default[0], REJECTED: cfg.negative or default[1]}
        self.template = cfg.template
        self.thought_marker, self.response_marker = cfg.thought_marker, cfg.response_marker
        self.require_thought = bool(cfg.require_thought)
        _format(self.template, "popalign.elicitive.template", query="q", instruction="i")

    def first(self, query: str) -> dict[str, Request]:
        return {s: Request.chat("generator", _user(_format(self.template, "popalign.elicitive.template", query=query,
                                                           instruction=self.instructions[s]))) for s in SLOTS}

    def postprocess(self, slot: str, text: str) -> str:
        return parse_elicitive(text, thought_marker=self.thought_marker, response_marker=self.response_marker,
                               require_thought=self.require_thought)[1]


class NParamContrast(PairBuilder):
    """r+ = larger(q), r- = smaller(q): two sizes of one model family."""

    name = "nparam"
    models = {CHOSEN: "larger", REJECTED: "smaller"}

    def __init__(self, cfg: Any = None, style: str = "general"):
        pass

    def first(self, query: str) -> dict[str, Request]:
        return {s: Request.chat(self.models[s], _user(query)) for s in SLOTS}


class LeaderboardContrast(NParamContrast):
    """r+ = higher-ranked(q), r- = lower-ranked(q)."""

    name = "leaderboard"
    models = {CHOSEN: "higher", REJECTED: "lower"}


class RefineContrast(PairBuilder):
    """r- = M(q); r+ = M(q, r-, I): the model improves its own answer in a second turn."""

    name = "refine"
    models = {CHOSEN: "generator", REJECTED: "generator"}

    def __init__(self, cfg: Any, style: str = "general"):
        self.instruction = cfg.instruction

    def first(self, query: str) -> dict[str, Request]:
        return {REJECTED: Request.chat("generator", _user(query))}

    def second(self, query: str, outputs: dict[str, str]) -> dict[str, Request]:
        return {CHOSEN: Request.chat("generator", _user(query) + [
            {"role": "assistant", "content": outputs[REJECTED].strip()},
            {"role": "user", "content": self.instruction}])}


class AlignerContrast(PairBuilder):
    """r- = M(q); r+ = Aligner(q, M(q)): the weak Aligner's correction as the preferred answer."""

    name = "aligner"
    models = {CHOSEN: "aligner", REJECTED: "generator"}

    def __init__(self, cfg: Any = None, style: str = "general"):
        pass

    def first(self, query: str) -> dict[str, Request]:
        return {REJECTED: Request.chat("generator", _user(query))}

    def second(self, query: str, outputs: dict[str, str]) -> dict[str, Request]:
        return {CHOSEN: Request("aligner", question=query, answer=outputs[REJECTED].strip())}


BUILDERS: dict[str, type[PairBuilder]] = {b.name: b for b in (
    PrefixContrast, DemonContrast, ElicitiveContrast, NParamContrast, LeaderboardContrast, RefineContrast,
    AlignerContrast)}


def make_builder(name: str, popalign_cfg: Any) -> PairBuilder:
    """The builder of strategy ``name`` configured from the ``popalign`` config section."""
    if name not in BUILDERS:
        raise ConfigError([ConfigIssue("popalign.strategies", name, "unknown strategy",
                                       f"use any of {sorted(BUILDERS)}")])
    return BUILDERS[name](popalign_cfg[name], popalign_cfg.style)


@dataclass
class PairJob:
    """One (prompt, strategy) pair under construction: its requests per slot and their raw outputs."""

    prompt_id: str
    query: str
    builder: PairBuilder
    requests: dict[str, Request] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # slot -> cached generation row

    def pending(self, cache: dict[str, dict[str, Any]], key_of: Any) -> dict[str, Request]:
        """Requests whose inputs are ready but whose output is not in ``cache`` (also records finished ones)."""
        todo: dict[str, Request] = {}
        steps = [self.builder.first(self.query)]
        for step in range(2):
            for slot, req in steps[step].items():
                req = replace(req, draw=f"{self.builder.name}:{slot}")
                self.requests[slot] = req
                row = cache.get(key_of(req))
                if row is None:
                    todo[slot] = req
                else:
                    self.outputs[slot] = row
            if todo or step == 1:
                break
            steps.append(self.builder.second(self.query, {s: r["text"] for s, r in self.outputs.items()}))
        return todo

    @property
    def done(self) -> bool:
        return all(s in self.outputs for s in SLOTS)
