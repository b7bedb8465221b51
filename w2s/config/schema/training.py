"""Training: the OpenRLHF trainers' settings, PPO, and the Aligner's training."""

from __future__ import annotations

from dataclasses import dataclass

from w2s.config.schema.fields import MISSING, _f
from w2s.config.schema.models import TripleDataConfig


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
    packing_samples: bool = _f(False, "Pack each micro-batch's rows into one sequence without padding (OpenRLHF's "
                               "--ds.packing_samples): the same loss, no compute spent on padding, so faster where "
                               "row lengths vary. flash_attention_2 keeps packed rows apart itself, sdpa and eager "
                               "through transformers' packed-sequence masks; each training checks this on its model "
                               "first (metric packing_difference) and stops with a config error where it fails.")
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
    ref_offload: bool = _f(False, "Keep the reference's parameters in host memory (ZeRO-3's parameter offload, "
                           "OpenRLHF's --ref.offload): each layer comes to the GPU for its forward pass only. Its GPU "
                           "memory is free for the whole run at the cost of a slower reference pass; with the trainer "
                           "colocated (cluster.colocate) the reference is then kept while other roles use the GPUs "
                           "instead of being loaded again each round. Needs zero_stage 3.")


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
    colocate_all: bool = _f(True, "Colocate actor, critic, reference, reward and vLLM on the same GPUs (sleep mode on "
                            "GPUs).")
    ref_reward_offload: bool = _f(False, "Keep the reference's and the reward model's parameters in host memory "
                                  "(ZeRO-3's parameter offload, OpenRLHF's --ref.offload and --reward.offload): "
                                  "each layer comes to the GPU for its forward pass only, leaving the GPUs to the "
                                  "actor, the critic and vLLM at the cost of slower scoring. Needs "
                                  "train.rlhf.reward_model.zero_stage 3 (PPO's stage).")
    packing_samples: bool = _f(False, "Pack the actor's, critic's, reference's and reward model's micro-batches "
                               "without padding (OpenRLHF's --ds.packing_samples), on flash-attention 2 only: "
                               "OpenRLHF's PPO switches to it when it packs.")
    vllm_engines: int = _f(1, "vLLM rollout engines.")
    vllm_tensor_parallel_size: int = _f(1, "GPUs per vLLM rollout engine.")
    checkpoint_every: int = _f(0, "Save OpenRLHF's resumable PPO state every this many steps; a rerun of the stage "
                               "loads the last one (0: never).", minimum=0)


@dataclass
class RLHFConfig:
    ppo_enabled: bool = _f(True, "Run PPO after the reward model. PPO places its actors on the trainer's GPUs (on a "
                           "machine without CUDA, Ray's logical GPUs: recipes/tiny/rlhf.yaml); false trains only the "
                           "reward model.")
    reward_model: RewardModelConfig = _f(help="The reward model trained on the round's (correction > answer) pairs.",
                                         factory=RewardModelConfig)
    ppo: PPOConfig = _f(help="PPO through OpenRLHF's Ray trainer (GPUs, or CPU with logical GPUs).", factory=PPOConfig)


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
