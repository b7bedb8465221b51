"""Judges that score (prompt, answer) pairs with a trained *score model*, read from its own on-disk format.

* ``openrlhf``: what OpenRLHF 0.11 saves after reward-model training (``openrlhf/models/model.py``,
  ``_get_reward_model``): the base transformer's weights plus a bias-free ``Linear(hidden, 1)`` value head named
  ``config.value_head_prefix`` (default ``score``). Its reward dataset (``openrlhf/datasets/reward_dataset.py``)
  renders the chat template over [user prompt, assistant answer], strips trailing newlines, appends
  ``" " + eos`` unless the text already ends with EOS, tokenises without special tokens, truncates on the right
  at ``max_len`` and then overwrites the last token with EOS; the reward is the head's value at that last real
  token. Its eval pass stores the reward ``mean``/``std`` in config.json; they are applied,
  ``(r - mean) / std``, when the saved ``normalize_reward`` flag is true (OpenRLHF applies them when loaded with
  ``normalize_reward``, i.e. the training flag for that run).
* ``safe-rlhf``: PKU-Alignment's score models (``LlamaForScore`` / ``LlamaModelForScore``, e.g.
  beaver-7b-v1.0-reward and -cost): ``score_head = Linear(hidden, score_dim)`` with a bias when
  ``config.score_bias`` (newer) or ``config.bias`` (v1.0 era) says so; ``end_scores`` are the head's output at
  the last position whose attention mask is set. Texts are ``BEGINNING OF CONVERSATION: USER: {prompt}
  ASSISTANT:{answer}`` + EOS, tokenised *with* special tokens (BOS for Llama), truncated on the right at the
  model's max length without re-adding EOS (as safe-rlhf does), so an over-long text is scored at its last kept
  token. With ``do_normalize`` the stored ``mean``/``var`` normalise it (reward: affine, cost: scale).

* ``sequence-classification``: a transformers ``*ForSequenceClassification`` model with one label (for example
  OpenAssistant's DeBERTa reward models): its own head and pooling; the text is the chat template over [prompt,
  answer] when the tokenizer has one, else the (prompt, answer) sentence pair its tokenizer was trained on.

Sign convention: ``score`` returns the model's raw (possibly normalised) score. A reward model: higher is
better. A cost model (beaver-7b-v1.0-cost): higher is MORE harmful; the caller flips its sign to use it as a
"higher is better" judge.

Security: no ``trust_remote_code`` unless asked; no unpickling (safetensors, or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import glob
import json
import math
import os
from typing import Any

from w2s.errors import W2SError
from w2s.eval.device import pick_device

OPENRLHF = "openrlhf"
SAFE_RLHF = "safe-rlhf"
CLASSIFIER = "sequence-classification"
PKU_TEMPLATE = "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:{answer}"
PROMPT_FORMATS = ("", "pku", "chat")


def _read_config(model_path: str) -> dict[str, Any]:
    path = os.path.join(model_path, "config.json")
    if not os.path.isfile(path):
        raise W2SError(f"{model_path}: no config.json; a score model judge needs a saved model directory")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def detect_format(model_path: str) -> str:
    """``safe-rlhf`` when config.json has ``score_dim`` or a ``*ForScore`` architecture, ``sequence-classification``
    for a ``*ForSequenceClassification`` architecture, else ``openrlhf``."""
    config = _read_config(model_path)
    architectures = [str(a) for a in config.get("architectures") or []]
    if "score_dim" in config or any(a.endswith("ForScore") for a in architectures):
        return SAFE_RLHF
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return CLASSIFIER
    return OPENRLHF


class ClassifierJudge:
    """A one-label ``*ForSequenceClassification`` model: its logit is the score."""

    format = CLASSIFIER

    def __init__(self, model_path: str, *, batch_size: int = 8, max_len: int = 1024, device: str = "",
                 trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = pick_device(device)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model_path, dtype=torch.float32, trust_remote_code=trust_remote_code).to(self.device).eval()
        if self.model.config.pad_token_id is None:  # the head pools at the last non-padding token
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_len = batch_size, max_len

    def score(self, prompts: list[str], answers: list[str], references: list[str]) -> list[float]:
        import torch

        chat = bool(getattr(self.tokenizer, "chat_template", None))
        scores: list[float] = []
        for i in range(0, len(prompts), self.batch_size):
            ps, ans = prompts[i:i + self.batch_size], answers[i:i + self.batch_size]
            if chat:
                texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": p},
                                                             {"role": "assistant", "content": a}], tokenize=False)
                         for p, a in zip(ps, ans)]
                enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_len)
            else:
                enc = self.tokenizer(ps, ans, return_tensors="pt", padding=True, truncation=True,
                                     max_length=self.max_len)
            with torch.inference_mode():
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits
            scores += logits[:, 0].float().tolist()
        return scores


def _load_tensors(model_path: str, names: list[str]) -> dict[str, Any]:
    """The named tensors (those present) from the checkpoint's weight files, read without unpickling."""
    import torch
    from safetensors import safe_open

    files: dict[str, list[str]] = {}  # weight file -> the wanted names to look for in it
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = os.path.join(model_path, index_name)
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f).get("weight_map", {})
            for name in names:
                if name in weight_map:
                    files.setdefault(os.path.join(model_path, weight_map[name]), []).append(name)
            break
    else:
        # No index: scan every safetensors file, else the pickled .bin files.
        found = sorted(glob.glob(os.path.join(model_path, "*.safetensors")))
        found = found or sorted(glob.glob(os.path.join(model_path, "pytorch_model*.bin")))
        files = {f: list(names) for f in found}
    out: dict[str, Any] = {}
    for file, wanted in files.items():
        if file.endswith(".safetensors"):
            with safe_open(file, framework="pt", device="cpu") as f:
                out.update({n: f.get_tensor(n) for n in wanted if n in f.keys()})
        else:
            # Only legacy checkpoints get here; weights_only=True is torch's restricted unpickler (tensors and
            # plain containers only), so a malicious .bin cannot run code.
            state = torch.load(file, weights_only=True, map_location="cpu", mmap=True)
            out.update({n: state[n] for n in wanted if n in state})
    return out


class ScoreModelJudge:
    """Scores (prompt, answer) pairs with an OpenRLHF reward model or a safe-rlhf score model (see module doc)."""

    device: str
    format: str

    def __init__(self, model_path: str, *, fmt: str = "auto", batch_size: int = 8, max_len: int = 1024,
                 device: str = "", prompt_format: str = "", trust_remote_code: bool = False):
        import torch
        from transformers import AutoModel, AutoTokenizer

        if not model_path:
            raise W2SError("a score model judge needs a model path")
        config = _read_config(model_path)
        self.format = detect_format(model_path) if fmt in ("", "auto") else fmt
        if self.format not in (OPENRLHF, SAFE_RLHF):
            raise W2SError(f"unknown score model format {fmt!r}: expected auto, {OPENRLHF} or {SAFE_RLHF}")
        if prompt_format not in PROMPT_FORMATS:
            raise W2SError(f"unknown prompt_format {prompt_format!r}: expected '' (the format's own), pku or chat")
        self.prompt_format = prompt_format or ("chat" if self.format == OPENRLHF else "pku")
        self.batch_size, self.max_len = batch_size, max_len

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.tokenizer.truncation_side = "right"  # both frameworks truncate the end of an over-long text
        if self.tokenizer.eos_token is None:
            raise W2SError(f"{model_path}: the tokenizer has no EOS token, which score models are read at")
        if self.prompt_format == "chat" and not getattr(self.tokenizer, "chat_template", None):
            raise W2SError(f"{model_path}: the tokenizer has no chat template to render prompt and answer with; "
                           "set eval.judges.<name>.prompt_format = pku (BEGINNING OF CONVERSATION: USER: ... "
                           "ASSISTANT:...) or save a tokenizer with a chat template")
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id  # as OpenRLHF does; padding is masked out anyway

        self.weight, self.bias = self._load_head(model_path, config)
        self.shift, self.scale = self._normalisation(config)

        self.device = pick_device(device)
        # float32 on CPU (no fast bf16 kernels there); bf16 on the GPU, the dtype both frameworks train in.
        dtype = torch.float32 if self.device == "cpu" else torch.bfloat16
        # AutoModel builds only the base transformer and ignores the head's keys; the head is applied here.
        self.model, info = AutoModel.from_pretrained(model_path, dtype=dtype, trust_remote_code=trust_remote_code,
                                                     output_loading_info=True)
        if info.get("missing_keys"):
            # A random base would give plausible-looking noise; refuse instead.
            raise W2SError(f"{model_path}: base model weights missing from the checkpoint: "
                           f"{sorted(info['missing_keys'])[:5]}")
        self.model.to(self.device).eval()
        self.weight, self.bias = self.weight.to(self.device), self.bias.to(self.device)

    def _load_head(self, model_path: str, config: dict[str, Any]) -> tuple[Any, Any]:
        import torch

        if self.format == OPENRLHF:
            weight_name, bias_name = f"{config.get('value_head_prefix', 'score')}.weight", None
        else:
            weight_name, bias_name = "score_head.weight", "score_head.bias"
        names = [weight_name] + ([bias_name] if bias_name else [])
        tensors = _load_tensors(model_path, names)
        if weight_name not in tensors:
            raise W2SError(f"{model_path}: no score head in the checkpoint (looked for {', '.join(names)} in its "
                           f"*.safetensors / pytorch_model*.bin files); is this a {self.format} score model?")
        weight = tensors[weight_name].float()
        if weight.ndim != 2 or weight.shape[0] != 1:
            raise W2SError(f"{model_path}: {weight_name} has shape {tuple(weight.shape)}; "
                           "a judge needs a single score (score_dim 1)")
        use_bias = False
        if bias_name:
            # safe-rlhf builds the head's bias from the config (score_bias, or bias in v1.0-era checkpoints).
            flag = config.get("score_bias", config.get("bias"))
            use_bias = bias_name in tensors if flag is None else bool(flag)
            if use_bias and bias_name not in tensors:
                raise W2SError(f"{model_path}: config.json asks for a score head bias but {bias_name} is missing")
        bias = tensors[bias_name].float().reshape(1) if use_bias else torch.zeros(1)
        return weight, bias

    def _normalisation(self, config: dict[str, Any]) -> tuple[float, float]:
        """(shift, scale) with score = (raw - shift) / scale, from the statistics the trainer stored."""
        if self.format == OPENRLHF:
            if config.get("normalize_reward") and "mean" in config:
                return float(config["mean"]), float(config.get("std", 1.0))
            return 0.0, 1.0
        if not config.get("do_normalize"):
            return 0.0, 1.0
        mean, var = config.get("mean") or [0.0], config.get("var") or [1.0]
        mean = float(mean[0] if isinstance(mean, list) else mean)
        std = math.sqrt(float(var[0] if isinstance(var, list) else var)) + 1e-8  # safe-rlhf's epsilon placement
        kind = config.get("score_type", "reward")
        if kind == "reward":
            return mean, std  # affine
        if kind == "cost":
            return 0.0, std  # scale only: keeps the sign meaning of a cost
        return 0.0, 1.0  # critic: identity

    def _text(self, prompt: str, answer: str) -> str:
        if self.prompt_format == "pku":
            text = PKU_TEMPLATE.format(prompt=prompt, answer=answer)
        else:
            # Exactly how OpenRLHF's reward dataset joins them: the generation prompt, then the rest of the
            # full conversation's rendering.
            user = [{"role": "user", "content": prompt}]
            head = self.tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
            full = self.tokenizer.apply_chat_template(user + [{"role": "assistant", "content": answer}],
                                                      tokenize=False)
            text = head + full[len(head):]
        eos = self.tokenizer.eos_token
        if self.format == OPENRLHF:
            text = text.rstrip("\n")
            return text if text.endswith(eos) else text + " " + eos
        stripped = text.rstrip("\n")  # a chat template may already end its turn with EOS
        return stripped if stripped.endswith(eos) else text + eos

    def _encode(self, text: str) -> list[int]:
        # The PKU text carries no special tokens of its own (safe-rlhf adds BOS); a chat template does.
        specials = self.format == SAFE_RLHF and self.prompt_format == "pku"
        ids = list(self.tokenizer(text, add_special_tokens=specials, truncation=True,
                                  max_length=self.max_len)["input_ids"])
        if self.format == OPENRLHF and ids:
            ids[-1] = self.tokenizer.eos_token_id  # OpenRLHF keeps EOS last even when truncating
        return ids

    def score(self, prompts: list[str], answers: list[str], references: list[str]) -> list[float]:
        """Raw score per pair (reward: higher is better; cost: higher is more harmful). ``references`` is ignored."""
        import torch

        if len(prompts) != len(answers):
            raise W2SError(f"score: {len(prompts)} prompts but {len(answers)} answers")
        encoded = [self._encode(self._text(p, a)) for p, a in zip(prompts, answers)]
        scores: list[float] = []
        for start in range(0, len(encoded), self.batch_size):
            batch = encoded[start:start + self.batch_size]
            width = max(len(ids) for ids in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, seq in enumerate(batch):  # right padding: real tokens never attend to padding
                ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[row, :len(seq)] = 1
            # Positions count real tokens only, so any padding side gives the unpadded result (as OpenRLHF does).
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                    position_ids=positions.to(self.device), use_cache=False).last_hidden_state
            # The last real token of each row, whatever the padding side.
            end = (width - 1 - mask.flip(1).argmax(dim=1)).to(self.device)
            last = hidden[torch.arange(len(batch), device=self.device), end].float()
            raw = last @ self.weight.T + self.bias
            scores.extend(((raw.squeeze(-1) - self.shift) / self.scale).tolist())
        return scores
