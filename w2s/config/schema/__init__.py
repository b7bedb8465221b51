"""The one typed config tree of w2s.

Every field has a type, a default (or ``MISSING`` when a recipe must set it) and a help string in
``metadata["help"]``; fields with a closed set of values list them in ``metadata["choices"]``, which the
validator checks. Batch sizes say their scope and unit in their names: ``*_per_device`` or ``global_*``,
counted in ``prompts`` or ``samples``.

Recipes are YAML files over this tree (see :mod:`w2s.config.compose`); ``w2s print-config`` shows a
fully resolved one and ``w2s explain KEY`` prints the help of any key.
"""

from __future__ import annotations

from dataclasses import dataclass

from w2s.config.schema.cluster import (
    ClusterConfig,
    LogConfig,
    RoleConfig,
    RunConfig,
    WandbConfig,
)
from w2s.config.schema.evaluation import (
    EndpointConfig,
    EvalConfig,
    JudgeConfig,
    LoopConfig,
)
from w2s.config.schema.fields import ATTENTION, BACKENDS, DTYPES, _f
from w2s.config.schema.jobs import (
    POPALIGN_STRATEGIES,
    POPALIGN_STYLES,
    AlignerContrastConfig,
    DemonContrastConfig,
    ElicitiveContrastConfig,
    InterpretConfig,
    InterpretControlConfig,
    ModelContrastConfig,
    PopAlignConfig,
    PopAlignFilterConfig,
    PopAlignJudgeConfig,
    PopAlignModelsConfig,
    PopAlignOutputConfig,
    PrefixContrastConfig,
    RefineContrastConfig,
)
from w2s.config.schema.models import (
    CorrectConfig,
    DataSourceConfig,
    GenerateConfig,
    ModelConfig,
    ModelsConfig,
    PromptDataConfig,
    SamplingConfig,
    TripleDataConfig,
)
from w2s.config.schema.training import (
    AlignerConfig,
    AlignerTemplateConfig,
    AlignerTrainConfig,
    DPOConfig,
    LoraConfig,
    OptimConfig,
    PPOConfig,
    RewardModelConfig,
    RLHFConfig,
    SFTConfig,
    TrainConfig,
    TrainerConfig,
)

__all__ = [
    "ATTENTION",
    "AlignerConfig",
    "AlignerContrastConfig",
    "AlignerTemplateConfig",
    "AlignerTrainConfig",
    "BACKENDS",
    "ClusterConfig",
    "CorrectConfig",
    "DPOConfig",
    "DTYPES",
    "DataSourceConfig",
    "DemonContrastConfig",
    "ElicitiveContrastConfig",
    "EndpointConfig",
    "EvalConfig",
    "GenerateConfig",
    "InterpretConfig",
    "InterpretControlConfig",
    "JOBS",
    "JudgeConfig",
    "LogConfig",
    "LoopConfig",
    "LoraConfig",
    "ModelConfig",
    "ModelContrastConfig",
    "ModelsConfig",
    "OptimConfig",
    "POPALIGN_STRATEGIES",
    "POPALIGN_STYLES",
    "PPOConfig",
    "PopAlignConfig",
    "PopAlignFilterConfig",
    "PopAlignJudgeConfig",
    "PopAlignModelsConfig",
    "PopAlignOutputConfig",
    "PrefixContrastConfig",
    "PromptDataConfig",
    "RLHFConfig",
    "RefineContrastConfig",
    "RewardModelConfig",
    "RoleConfig",
    "RunConfig",
    "SFTConfig",
    "SamplingConfig",
    "TrainConfig",
    "TrainerConfig",
    "TripleDataConfig",
    "W2SConfig",
    "WandbConfig",
]


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
