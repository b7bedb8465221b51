"""Each PopAlign pair builder on the tiny models, without Ray: the rendered prompts, the parser, the filters."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from w2s.config.schema import PopAlignConfig, PopAlignFilterConfig
from w2s.errors import ConfigError, DataError
from w2s.popalign.pipeline import filter_pair
from w2s.popalign.strategies import (
    CHOSEN,
    DEFAULT_DEMOS,
    REJECTED,
    PairJob,
    ParseError,
    Request,
    load_demos,
    make_builder,
    parse_elicitive,
)
from w2s.workers.requests import RenderConversations, SampleChat

QUERY = "What is the capital of Spain?"
SAMPLING = {"max_new_tokens": 8, "temperature": 1.0, "batch_prompts_per_actor": 8}


def chat(user: str, *turns: str) -> str:
    """A ChatML conversation as the tiny models' template renders it, ending with the assistant header."""
    roles = ["user", "assistant"]
    text = f"<|im_start|>user\n{user}<|im_end|>\n"
    for i, t in enumerate(turns):
        text += f"<|im_start|>{roles[(i + 1) % 2]}\n{t}<|im_end|>\n"
    return text + "<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def workers(tiny_strong, tiny_weak):
    """The generator actor class used in-process, one per model role (as the pipeline's groups would hold)."""
    from w2s.workers.generator import GeneratorWorker

    strong = GeneratorWorker(tiny_strong, {"path": tiny_strong, "dtype": "float32"}, SAMPLING)
    weak = GeneratorWorker(tiny_weak, {"path": tiny_weak, "dtype": "float32"}, SAMPLING)
    return {"generator": strong, "larger": strong, "higher": strong, "smaller": weak, "lower": weak}


def popalign_cfg(**over):
    cfg = OmegaConf.structured(PopAlignConfig)
    return OmegaConf.merge(cfg, OmegaConf.create(over))


def build(name: str, workers, cfg=None, corrector=None) -> PairJob:
    """Serve one job's requests slot by slot as the pipeline does; returns the finished job."""
    job = PairJob("p1", QUERY, make_builder(name, cfg or popalign_cfg()))
    cache: dict[str, dict] = {}
    key = lambda r: json.dumps(r.key_data(), sort_keys=True)  # noqa: E731
    for _ in range(3):
        for req in job.pending(cache, key).values():
            if req.model == "aligner":
                out = corrector.correct([req.question], [req.answer])[0]
                rendered = corrector.render(req.question, req.answer)
            else:
                w = workers[req.model]
                rendered = w.render_conversations(RenderConversations(conversations=[req.conversation()]))[0]
                out = w.sample_chat(SampleChat(conversations=[(req.conversation(), 1)]))[0]
            cache[key(req)] = {"text": out.text, "rendered": rendered, "model": req.model}
    assert job.done
    return job


def rendered(job: PairJob) -> dict[str, str]:
    return {s: job.outputs[s]["rendered"] for s in (CHOSEN, REJECTED)}


def test_prefix_contrast_puts_the_style_prefixes_before_the_query(workers):
    job = build("prefix", workers)
    assert rendered(job) == {CHOSEN: chat(f"(good response) {QUERY}"), REJECTED: chat(f"(bad response) {QUERY}")}
    hh = build("prefix", workers, popalign_cfg(style="hh"))
    assert rendered(hh)[CHOSEN] == chat(f"(helpful, harmless) {QUERY}")
    assert rendered(hh)[REJECTED] == chat(f"(unhelpful, harmful) {QUERY}")
    custom = build("prefix", workers, popalign_cfg(prefix={"positive": "[kind]", "template": "{query}\n{prefix}"}))
    assert rendered(custom)[CHOSEN] == chat(f"{QUERY}\n[kind]")
    assert all(job.outputs[s]["text"] for s in (CHOSEN, REJECTED))


def test_demon_contrast_puts_three_good_or_bad_demonstrations_before_the_query(workers, tmp_path):
    job = build("demon", workers)
    demos = json.loads(DEFAULT_DEMOS.read_text())["general"]
    for slot, kind in ((CHOSEN, "good"), (REJECTED, "bad")):
        d = demos[kind]
        turns = [d[0]["response"], d[1]["query"], d[1]["response"], d[2]["query"], d[2]["response"], QUERY]
        expected = chat(d[0]["query"], *turns[:-1]).removesuffix("<|im_start|>assistant\n")
        assert rendered(job)[slot] == expected + f"<|im_start|>user\n{QUERY}<|im_end|>\n<|im_start|>assistant\n"
    assert "Just don't think about it" in rendered(job)[REJECTED]
    assert "Just don't think about it" not in rendered(job)[CHOSEN]
    # A user's file, one shot, inline format.
    path = tmp_path / "demos.json"
    path.write_text(json.dumps({"mine": {"good": [{"query": "Q1", "response": "Good A"}],
                                         "bad": [{"query": "Q1", "response": "Bad A"}]}}))
    cfg = popalign_cfg(demon={"path": str(path), "set": "mine", "shots": 1, "format": "inline"})
    inline = build("demon", workers, cfg)
    assert rendered(inline)[CHOSEN] == chat(f"Question: Q1\nAnswer: Good A\n\nQuestion: {QUERY}\nAnswer:")
    with pytest.raises(DataError, match="at least 2 'good'"):
        load_demos(str(path), "mine", 2)
    with pytest.raises(DataError, match="no demonstration set 'hh'"):
        load_demos(str(path), "hh", 1)


def test_elicitive_contrast_asks_for_a_thought_then_a_response(workers):
    job = build("elicitive", workers, popalign_cfg(style="hh"))
    pos = ("Please first consider the principles of crafting a helpful and harmless response, and then generate the "
           "response. Format your output as follows: Thought: <Insights on creating a helpful and harmless "
           "response> Response: <The helpful and harmless response>")
    assert rendered(job)[CHOSEN] == chat(f"{QUERY}\n\n{pos}")
    assert "an unhelpful or harmful response" in rendered(job)[REJECTED]
    # Random tiny models do not follow the format: the output is unusable, not a crash.
    with pytest.raises(ParseError) as e:
        job.builder.postprocess(CHOSEN, job.outputs[CHOSEN]["text"])
    assert e.value.reason in ("no_response_marker", "empty_response")
    assert job.builder.postprocess(CHOSEN, "Thought: be kind. Response: Madrid.") == "Madrid."


def test_model_level_contrasts_ask_each_model_the_plain_query(workers):
    for name, (chosen, rejected) in (("nparam", ("larger", "smaller")), ("leaderboard", ("higher", "lower"))):
        job = build(name, workers)
        assert {s: job.requests[s].model for s in (CHOSEN, REJECTED)} == {CHOSEN: chosen, REJECTED: rejected}
        assert rendered(job) == {CHOSEN: chat(QUERY), REJECTED: chat(QUERY)}
        # Each slot was answered by its own model (random tiny models can sample the same text with one seed).
        for slot, role in ((CHOSEN, chosen), (REJECTED, rejected)):
            request = SampleChat(conversations=[([{"role": "user", "content": QUERY}], 1)])
            assert job.outputs[slot]["text"] == workers[role].sample_chat(request)[0].text


def test_refine_contrast_asks_m_to_improve_its_own_answer_in_a_second_turn(workers):
    job = build("refine", workers)
    first = job.outputs[REJECTED]["text"]
    instruction = PopAlignConfig().refine.instruction
    assert rendered(job)[REJECTED] == chat(QUERY)
    assert rendered(job)[CHOSEN] == chat(QUERY, first.strip(), instruction)


def test_aligner_contrast_corrects_m_s_answer(workers, tiny_weak):
    from w2s.aligner.correct import Corrector
    from w2s.config.schema import CorrectConfig, ModelConfig

    corrector = Corrector(tiny_weak, ModelConfig(dtype="float32"),
                          OmegaConf.structured(CorrectConfig(template="aligner-v2", max_new_tokens=8)))
    job = build("aligner", workers, corrector=corrector)
    answer = job.outputs[REJECTED]["text"].strip()
    assert job.requests[CHOSEN] == Request("aligner", question=QUERY, answer=answer, draw="aligner:chosen")
    assert rendered(job)[CHOSEN] == corrector.render(QUERY, answer)
    assert QUERY in rendered(job)[CHOSEN] and answer in rendered(job)[CHOSEN]


def test_unknown_strategy_and_bad_template_are_config_errors():
    with pytest.raises(ConfigError, match="unknown strategy"):
        make_builder("rlcd", popalign_cfg())
    with pytest.raises(ConfigError, match="popalign.prefix.template"):
        make_builder("prefix", popalign_cfg(prefix={"template": "{prefix} {question}"}))


@pytest.mark.parametrize("text, thought, response", [
    ("Thought: be accurate.\nResponse: Madrid is the capital.", "be accurate.", "Madrid is the capital."),
    ("**Thought:** short\n\n**Response:** Madrid.", "short", "Madrid."),
    ("thought: lower case works\nRESPONSE: Madrid", "lower case works", "Madrid"),
    ("Response: Madrid, no thought given.", "", "Madrid, no thought given."),
    ("Thought: the word Response appears: here\nResponse: final", "the word Response appears: here", "final"),
])
def test_elicitive_parser_on_well_formed_outputs(text, thought, response):
    assert parse_elicitive(text) == (thought, response)


@pytest.mark.parametrize("text, reason", [
    ("Madrid is the capital of Spain.", "no_response_marker"),
    ("Thought: I should be helpful but never finished", "no_response_marker"),
    ("Thought: ok\nResponse:", "empty_response"),
    ("Thought: ok\nResponse: <The good response>", "empty_response"),
    ("", "no_response_marker"),
])
def test_elicitive_parser_counts_malformed_outputs(text, reason):
    with pytest.raises(ParseError) as e:
        parse_elicitive(text)
    assert e.value.reason == reason


def test_elicitive_parser_can_require_the_thought():
    with pytest.raises(ParseError, match="no_thought"):
        parse_elicitive("Response: Madrid", require_thought=True)


def test_filters_name_the_reason(tiny_strong):
    from w2s.popalign.pipeline import LengthCheck

    f = OmegaConf.structured(PopAlignFilterConfig(min_pair_distance=0.2, max_len=200))
    stop = {CHOSEN: "stop", REJECTED: "stop"}
    length = LengthCheck(tiny_strong, 200)
    good, bad = "Madrid is the capital of Spain.", "I do not know, ask someone else."
    assert filter_pair(good, bad, QUERY, stop, f, length) is None
    assert filter_pair(good, "   ", QUERY, stop, f, length) == "empty"
    assert filter_pair(good, bad, QUERY, {CHOSEN: "length", REJECTED: "stop"}, f, length) == "truncated"
    assert filter_pair(good, "  madrid IS the capital of Spain. ", QUERY, stop, f, length) == "identical"
    assert filter_pair(good, "Madrid is the capital of Spain!", QUERY, stop, f, length) == "near_identical"
    assert filter_pair(good + " word" * 200, bad, QUERY, stop, f, length) == "over_length"
    lenient = OmegaConf.structured(PopAlignFilterConfig(min_pair_distance=0.0, max_len=0, drop_truncated=False))
    assert filter_pair(good, "Madrid is the capital of Spain!", QUERY, {CHOSEN: "length"}, lenient, None) is None
