"""The rounds and their evaluation: judges, endpoints, the evaluation sets."""

from __future__ import annotations

from dataclasses import dataclass

from w2s.config.schema.fields import DTYPES, _f
from w2s.config.schema.models import PromptDataConfig, SamplingConfig


# ----------------------------------------------------------------------------------------------- loop and eval
@dataclass
class LoopConfig:
    rounds: int = _f(1, "Weak-to-strong rounds: generate, correct, train, evaluate. Raised on a finished run, only the "
                     "new rounds run.")
    prompts: PromptDataConfig = _f(help="Prompts the strong policy answers.", factory=PromptDataConfig)
    prompts_per_round: int = _f(0, "Prompts answered per round (global). 0: all prompts every round.", minimum=0)
    repeat_prompts: bool = _f(False, "Allow a prompt in more than one round (otherwise rounds take disjoint slices).")
    ceiling: bool = _f(False, "Also train a ceiling each round: the same policy trained the same way (method, "
                       "section, seeds, KL anchor) on the loop prompts' gold references (their reference field) "
                       "instead of the Aligner's corrections; each round then reports the performance gap recovered, "
                       "PGR = (w2s - floor) / (ceiling - floor), with the Aligner's own corrections of the initial "
                       "answers as the floor, per judge with a 95% CI (sft and dpo; needs eval and eval.aligner).")
    on_truncated: str = _f("drop", "Answers or corrections cut off at max_new_tokens: drop them from the round's "
                           "training data (counted in the data stage's metrics), or keep them.", ["drop", "keep"])


@dataclass
class EndpointConfig:
    base_url: str = _f("", "An OpenAI-compatible API root: a hosted model (https://api.openai.com/v1) or `vllm serve` "
                       "on the cluster (http://HOST:8000/v1).")
    model: str = _f("", "The model name the endpoint serves.")
    api_key_env: str = _f("", "Environment variable holding the API key, read at run time and never stored. Empty: "
                          "no key (a local server).")
    concurrency: int = _f(8, "Requests in flight at once.")
    timeout_s: float = _f(120.0, "Seconds one request may take before it is retried.")
    max_retries: int = _f(8, "Retries of a request after a rate limit (429), a server error (5xx), a timeout or a "
                          "refused connection, with exponential backoff.")
    backoff_s: float = _f(1.0, "First wait before a retry; doubled after each failure (with jitter).")
    backoff_max_s: float = _f(60.0, "Longest wait between retries (a Retry-After header counts up to this).")


@dataclass
class JudgeConfig:
    enabled: bool = _f(True, "Use this judge (set false to turn off a judge a recipe defines).")
    kind: str = _f("embedding", "embedding (cosine similarity to the reference answer, all-MiniLM-L6-v2, offline); "
                   "reward-model (a score model: higher is better); cost-model (a score model: lower is better, "
                   "e.g. beaver-7b-v1.0-cost); pairwise (an LLM judge names the better or worse of two answers).",
                   ["embedding", "reward-model", "cost-model", "pairwise"])
    dimension: str = _f("", "What a win means in reports (helpfulness, harmlessness, ...). Empty: the preset's or "
                        "the kind's.")
    model: str = _f("", "Judge model path (score models; a local pairwise judge). Empty: the bundled "
                    "all-MiniLM-L6-v2 for the embedding judge.")
    format: str = _f("auto", "Score-model format: openrlhf (what an RLHF round trains), safe-rlhf (PKU's beaver "
                     "score models), sequence-classification (a transformers classifier with one label, e.g. "
                     "OpenAssistant's DeBERTa reward models), or auto (read from config.json).",
                     ["auto", "openrlhf", "safe-rlhf", "sequence-classification"])
    prompt_format: str = _f("", "How a score model or a local judge model reads its input: empty = the format's "
                            "default (OpenRLHF and local judges: the chat template; safe-rlhf: the PKU format), chat, "
                            "or pku.", ["", "chat", "pku"])
    dtype: str = _f("bfloat16", "Weights' dtype of a local pairwise judge model.", DTYPES)
    trust_remote_code: bool = _f(False, "Run Python code shipped with the judge model. Only for models you trust.")
    tie_margin: float = _f(0.01, "Score judges: score differences at most this large count as ties.")
    batch_size: int = _f(32, "Score judges: texts scored per batch.")
    max_len: int = _f(1024, "Score models: most tokens of prompt plus answer read.")
    preset: str = _f("", "Pairwise judges: the Aligner paper's judge prompt (Tables 5-8), word for word.",
                     ["", "harmlessness", "helpfulness", "dialogue-summary", "empathy"])
    system_prompt: str = _f("", "Pairwise judges: a system prompt of your own (overrides the preset's).")
    user_prompt: str = _f("", "Pairwise judges: a user prompt of your own, a format string with {prompt}, "
                          "{responseA} and {responseB}, asking for [[responseA]], [[responseB]] or [[Equal]].")
    picks: str = _f("", "Pairwise judges: whether the judge names the better or the worse answer (the "
                    "harmlessness preset asks for the more harmful one). Empty: the preset's, else better.",
                    ["", "better", "worse"])
    both_orders: bool = _f(True, "Pairwise judges: judge each pair in both orders; orders that disagree are a tie "
                           "(false: one order per prompt, drawn from the seed, as the paper does).")
    backend: str = _f("endpoint", "Pairwise judges: endpoint (an OpenAI-compatible server) or local (the model at "
                      "`model`, in the judge role's actors).", ["endpoint", "local"])
    endpoint: EndpointConfig = _f(help="Pairwise judges with backend=endpoint: where to send requests.",
                                  factory=EndpointConfig)
    generate: SamplingConfig = _f(help="Pairwise judges: decoding of the judge model (greedy, room for reasoning).",
                                  factory=lambda: SamplingConfig(preset="greedy", max_new_tokens=512))


@dataclass
class EvalConfig:
    enabled: bool = _f(True, "Evaluate after every round.")
    prompts: PromptDataConfig = _f(help="Held-out evaluation prompts (with reference answers for the embedding "
                                   "judge; an optional category per prompt for the breakdown).",
                                   factory=PromptDataConfig)
    max_prompts: int = _f(0, "Evaluate on at most this many prompts (0: all).", minimum=0)
    role: str = _f("dev", "What the evaluation prompts are, as you declare it (w2s cannot know which choices a set "
                   "informed): dev, a set that may have been used to choose something (a recipe, a setting, a "
                   "checkpoint); test, one held back until every choice was made, whose results are the ones to "
                   "report. The report and w2s status repeat it beside every result on these prompts.",
                   ["dev", "test"])
    allow_overlap: bool = _f(False, "Run an evaluation whose prompts include questions the evaluated Aligner was "
                             "trained on (w2s eval --aligner); without it such a run is refused. The count goes into "
                             "summary.json and the report.")
    compare_to: list[str] = _f(help="Policies each round's policy is compared with.",
                               factory=lambda: ["previous", "initial"])
    judges: dict[str, JudgeConfig] = _f(help="The judges, by name; all of them judge every comparison. A recipe adds "
                                        "judges; eval.judges.NAME.enabled=false turns one off.",
                                        factory=lambda: {"similarity": JudgeConfig()})
    aligner: bool = _f(True, "When the run trains its Aligner: also judge the Aligner itself (its corrections "
                       "against the original answers) on the held-out questions of its triples and on the initial "
                       "policy's answers to the evaluation prompts.")
    generate: SamplingConfig = _f(help="Decoding for evaluation answers (greedy by default, so rounds compare "
                                  "deterministically).", factory=lambda: SamplingConfig(preset="greedy"))
