"""The other jobs' sections: interpretability and PopAlign."""

from __future__ import annotations

from dataclasses import dataclass

from w2s.config.schema.evaluation import JudgeConfig
from w2s.config.schema.fields import _f
from w2s.config.schema.models import ModelConfig, PromptDataConfig, SamplingConfig, TripleDataConfig


# ----------------------------------------------------------------------------------------------- interpret
@dataclass
class InterpretControlConfig:
    alphas: list[float] = _f(help="Control coefficients (the paper's Fig. 4c: -1.00 to 0.50 in steps of 0.25).",
                             factory=lambda: [-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5])
    layers: list[int] = _f(help="Layers whose output gets alpha x V_c added (0-based). Empty: the quarter of the "
                           "layers whose reading vector separates best on held-out pairs (w2s's choice; the paper "
                           "does not say).", factory=list)
    scale: str = _f("diff-norm", "What alpha = 1 means: diff-norm (one average correction step: the mean norm of the "
                    "correction-minus-copy differences, split evenly over the control layers; w2s's choice) or unit "
                    "(the unit vector, split likewise).", ["diff-norm", "unit"])
    max_pairs: int = _f(32, "(question, answer) pairs corrected at every alpha (0: all).", minimum=0)
    base_model: bool = _f(True, "Also steer the base model the Aligner was trained from (the paper's Llama2-7B "
                          "experiment), with the Aligner's prompt.")


@dataclass
class InterpretConfig:
    pairs: TripleDataConfig = _f(help="(question, answer) pairs to correct and read (a correction field is not "
                                 "needed).", factory=TripleDataConfig)
    max_pairs: int = _f(64, "Pairs used to find the reading vector (0: all).", minimum=0)
    tokens: int = _f(20, "Generated tokens read per stimulus (the paper's Fig. 4: the first 20).")
    heldout_fraction: float = _f(0.5, "Share of the pairs held out to score how well each layer separates the "
                                 "two conditions.")
    band: list[int] = _f(help="Optional [first, last] layers (inclusive) of one extra reading vector for the band.",
                         factory=list)
    generate: SamplingConfig = _f(help="Decoding of the Aligner's corrections (greedy: the stimuli are then "
                                  "deterministic).", factory=lambda: SamplingConfig(preset="greedy", max_new_tokens=64))
    control: InterpretControlConfig = _f(help="Representation control.", factory=InterpretControlConfig)


# ----------------------------------------------------------------------------------------------- popalign
# PopAlign (arXiv 2410.13785). Apart from the strategy names, the paper's details used as defaults below come from
# secondary summaries and are unverified; w2s/popalign/README.md says which.
POPALIGN_STRATEGIES = ["prefix", "demon", "elicitive", "nparam", "leaderboard", "refine", "aligner"]
POPALIGN_STYLES = ["hh", "general"]


@dataclass
class PopAlignModelsConfig:
    generator: ModelConfig = _f(help="M, the model of the prompt- and pipeline-level strategies (prefix, demon, "
                                "elicitive, refine) and of the Aligner contrast's answers (paper: Yi-34B-Chat). "
                                "Empty path: model.strong.", factory=ModelConfig)
    larger: ModelConfig = _f(help="NParam contrast: the larger model of the family, giving chosen (paper: "
                             "Yi-34B-Chat). Empty path: the generator.", factory=ModelConfig)
    smaller: ModelConfig = _f(help="NParam contrast: the smaller model of the same family, giving rejected (paper: "
                              "Yi-6B-Chat). Required when nparam is used.", factory=ModelConfig)
    higher: ModelConfig = _f(help="Leaderboard contrast: the higher-ranked model, giving chosen (paper: "
                             "Yi-34B-Chat). Empty path: the generator.", factory=ModelConfig)
    lower: ModelConfig = _f(help="Leaderboard contrast: the lower-ranked model, giving rejected (paper: "
                            "Vicuna-33B). Required when leaderboard is used.", factory=ModelConfig)


@dataclass
class PrefixContrastConfig:
    weight: float = _f(1.0, "Share of the prompts this strategy builds a pair for, chosen by a seeded draw (1: every "
                       "prompt, as in the paper; 0: off).")
    positive: str = _f("", "Prefix of the chosen answer's prompt. Empty: the popalign.style default, `(helpful, "
                       "harmless)` for hh, `(good response)` for general.")
    negative: str = _f("", "Prefix of the rejected answer's prompt. Empty: `(unhelpful, harmful)` for hh, "
                       "`(bad response)` for general.")
    template: str = _f("{prefix} {query}", "User message built from {prefix} and {query} (where the prefix goes is "
                       "not verified in the paper; RLCD put it in the assistant header).")


@dataclass
class DemonContrastConfig:
    weight: float = _f(1.0, "Share of the prompts this strategy builds a pair for (1: every prompt; 0: off).")
    path: str = _f("", "Demonstration file: JSON {SET: {good: [{query, response}], bad: [...]}}. Empty: the set "
                   "shipped in w2s/popalign/demos.json.")
    set: str = _f("", "Which set of the file to use. Empty: popalign.style (hh or general).")
    shots: int = _f(3, "Demonstrations placed before the query (paper: three good vs three bad).")
    format: str = _f("chat", "chat: each demonstration is a prior user/assistant turn; inline: all demonstrations "
                     "and the query in one user message.", ["chat", "inline"])


@dataclass
class ElicitiveContrastConfig:
    weight: float = _f(1.0, "Share of the prompts this strategy builds a pair for (1: every prompt; 0: off).")
    positive: str = _f("", "Instruction eliciting a Thought on a good answer, then the Response. Empty: the "
                       "popalign.style default (the paper's prompt as quoted by a secondary summary).")
    negative: str = _f("", "The same for a bad answer. Empty: the popalign.style default.")
    template: str = _f("{query}\n\n{instruction}", "User message built from {query} and {instruction} (order "
                       "not verified in the paper).")
    thought_marker: str = _f("Thought:", "Marker starting the thought (dropped from the pair).")
    response_marker: str = _f("Response:", "Marker starting the response (only the text after it enters the pair).")
    require_thought: bool = _f(False, "Also drop outputs with a Response but no Thought (counted as no_thought).")


@dataclass
class ModelContrastConfig:
    weight: float = _f(1.0, "Share of the prompts this strategy builds a pair for (1: every prompt; 0: off). The "
                       "models are popalign.models.*.")


@dataclass
class RefineContrastConfig:
    weight: float = _f(1.0, "Share of the prompts this strategy builds a pair for (1: every prompt; 0: off).")
    instruction: str = _f("Please improve your previous answer: make it more helpful, accurate and harmless. Reply "
                          "with the improved answer only.", "Second-turn instruction I; chosen = M(query, rejected, "
                          "I). The paper's exact text is unknown; this default is w2s's.")


@dataclass
class AlignerContrastConfig:
    weight: float = _f(1.0, "Share of the prompts this strategy builds a pair for (1: every prompt; 0: off). "
                       "rejected = M(query), chosen = Aligner(query, M(query)); the Aligner is model.aligner, "
                       "decoding and template from `correct`.")


@dataclass
class PopAlignFilterConfig:
    min_pair_distance: float = _f(0.05, "Drop pairs whose chosen and rejected differ by less than this normalised "
                                  "word edit distance (identical texts after whitespace/case normalisation are "
                                  "always dropped, as `identical`).")
    max_len: int = _f(2048, "Drop pairs whose prompt + chosen or prompt + rejected is longer than this many tokens "
                      "under model.strong's tokenizer and chat template (0: no limit). Paper: 2048.")
    drop_truncated: bool = _f(True, "Drop pairs where an answer stopped at max_new_tokens (finish reason length).")


@dataclass
class PopAlignJudgeConfig(JudgeConfig):
    enabled: bool = _f(False, "Measure contrast accuracy: the share of pairs where the judge scores chosen above "
                       "rejected, per strategy (the paper's Table 2 used GPT-4 and PairRM on 200 pairs).")
    kind: str = _f("reward-model", "reward-model (needs no references; model = a reward model in OpenRLHF's or "
                   "safe-rlhf's format, or a transformers classifier) or embedding (needs a reference answer per "
                   "prompt, popalign.prompts.reference_key).",
                   ["embedding", "reward-model"])
    max_pairs_per_strategy: int = _f(200, "Pairs judged per strategy (0: all), a seeded sample.", minimum=0)


@dataclass
class PopAlignOutputConfig:
    shuffle: bool = _f(True, "Shuffle the mixed pairs (seeded) so strategies are interleaved for training.")
    write_dropped: bool = _f(True, "Also write the filtered-out pairs with their reasons to dropped.jsonl.")
    chunk_requests: int = _f(256, "Generation requests sent to a model group at a time; each finished chunk is "
                             "saved, so a resumed build redoes at most one chunk.")


@dataclass
class PopAlignConfig:
    strategies: list[str] = _f(help=f"Strategies to build pairs with, any subset of {POPALIGN_STRATEGIES} (the six "
                               "of the paper by default; aligner is w2s's seventh).",
                               factory=lambda: POPALIGN_STRATEGIES[:6])
    style: str = _f("general", "Default prefixes, demonstrations and elicitive prompts: hh (helpful/harmless "
                    "dialogue) or general instructions.", POPALIGN_STYLES)
    prompts: PromptDataConfig = _f(help="The instructions to build pairs for (paper: UltraFeedback prompts).",
                                   factory=PromptDataConfig)
    max_prompts: int = _f(0, "Use at most this many prompts (0: all).", minimum=0)
    models: PopAlignModelsConfig = _f(help="The models of the strategies.", factory=PopAlignModelsConfig)
    generate: SamplingConfig = _f(help="Decoding of every chat generation (all generator models).",
                                  factory=SamplingConfig)
    prefix: PrefixContrastConfig = _f(help="Prefix contrast.", factory=PrefixContrastConfig)
    demon: DemonContrastConfig = _f(help="Demon (demonstration) contrast.", factory=DemonContrastConfig)
    elicitive: ElicitiveContrastConfig = _f(help="Elicitive contrast.", factory=ElicitiveContrastConfig)
    nparam: ModelContrastConfig = _f(help="NParam contrast (larger vs smaller model).", factory=ModelContrastConfig)
    leaderboard: ModelContrastConfig = _f(help="Leaderboard contrast (higher- vs lower-ranked model).",
                                          factory=ModelContrastConfig)
    refine: RefineContrastConfig = _f(help="Refine contrast.", factory=RefineContrastConfig)
    aligner: AlignerContrastConfig = _f(help="Aligner contrast (w2s's seventh strategy).",
                                        factory=AlignerContrastConfig)
    filter: PopAlignFilterConfig = _f(help="Pair filters.", factory=PopAlignFilterConfig)
    judge: PopAlignJudgeConfig = _f(help="Optional contrast-accuracy check.", factory=PopAlignJudgeConfig)
    output: PopAlignOutputConfig = _f(help="Output settings.", factory=PopAlignOutputConfig)
    train_dpo: bool = _f(False, "After building the dataset, train model.strong on it with DPO (train.dpo settings, "
                         "reference = model.strong) on the trainer role.")
