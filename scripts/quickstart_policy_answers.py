"""Give half of the quickstart's triples the answers the quickstart's own policy writes.

The Aligner corrects the answers of an upstream model, so it should learn from answers like that model's: the
hand-written answers of recipes/data/quickstart/triples.jsonl are short and plainly wrong, while SmolLM2-135M-
Instruct's are long, rambling and often cut off. This script answers every other triple's question (the file
interleaves its four categories, so these are the harmful and empathy rows) with
SmolLM2-135M-Instruct (greedy, 128 new tokens, the quickstart's own decoding) and puts that answer in `answer`
(marked `answer_source: smollm2-135m-instruct`), keeping the hand-written one in `written_answer`; the
correction stays the hand-written one. Rerunning it gives the same file (greedy decoding, float32).

    .venv/bin/python scripts/quickstart_policy_answers.py [--triples recipes/data/quickstart/triples.jsonl]

`--with-factual --output FILE` also answers the factual rows (in a second pass, so the others stay as they are)
and writes the result to FILE: the candidate triples that were measured on the dev set and not taken (the
README's "Factual answers from the policy").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SOURCE = "smollm2-135m-instruct"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triples", default="recipes/data/quickstart/triples.jsonl")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--with-factual", action="store_true", help="also answer the factual rows (a second pass)")
    parser.add_argument("--output", help="write here instead of over --triples")
    args = parser.parse_args()

    from omegaconf import OmegaConf

    from w2s.assets import resolve_model_path
    from w2s.config.schema import ModelConfig, SamplingConfig
    from w2s.data.files import atomic_write_text
    from w2s.generation import make_generator, render_chat

    path = Path(args.triples)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:  # a rerun starts from the hand-written answers
        if r.get("answer_source") == SOURCE:
            r["answer"] = r.pop("written_answer")
            r.pop("answer_source")
    passes = [rows[::2]]  # the harmful and empathy rows, as the categories interleave
    if args.with_factual:
        passes.append([r for r in rows if r["category"] == "factual"])
    model = resolve_model_path("asset:smollm2")
    sampling = OmegaConf.structured(SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.0,
                                                   batch_prompts_per_actor=16))
    gen = make_generator(model, OmegaConf.structured(ModelConfig(path=model, dtype="float32")), sampling)
    for picked in passes:  # one pass each: a row's batch, hence its greedy answer, does not depend on the other
        outs = gen.generate([render_chat(gen.tokenizer, r["question"]) for r in picked], sampling, seed=0,
                            progress=True)
        for r, out in zip(picked, outs, strict=True):
            r["written_answer"], r["answer"], r["answer_source"] = r["answer"], out.text.strip(), SOURCE
    gen.close()
    output = Path(args.output or path)
    atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{sum(map(len, passes))} of {len(rows)} answers now from {SOURCE}: {output}")


if __name__ == "__main__":
    main()
