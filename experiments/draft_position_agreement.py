"""Does the draft LM lose the target at long positions? Greedy agreement (draft argmax == target argmax) per
1,000-position bucket on one long natural sequence: target answers from train_data/smollm2 concatenated to
8,000 tokens, fed whole (positions up to 8,000) and in 512-token chunks (positions restarted: the same text
with short contexts). Prints one line per bucket.

    python experiments/draft_position_agreement.py [--shard train_data/smollm2/shard-00001.parquet] [--length 8000]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow.parquet as pq
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from svbench.config import group_config  # noqa: E402
from svbench.decoding.drafters import drafter_class  # noqa: E402
from svbench.models import load_pair  # noqa: E402


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shard", default=str(REPO / "train_data/smollm2/shard-00001.parquet"))
    ap.add_argument("--length", type=int, default=8000)
    ap.add_argument("--chunk", type=int, default=512)
    args = ap.parse_args()
    if not Path(args.shard).is_file():
        ap.error(f"--shard {args.shard}: no such file (a train_data/*/shard-*.parquet)")
    if args.length < 1 or args.chunk < 1:
        ap.error("--length and --chunk must be >= 1")
    torch.set_num_threads(2)
    cls = drafter_class(group_config("method", "vanilla_sd"))
    pair = load_pair(group_config("pair", "smollm2"), "bfloat16", "cpu", drafter_cls=cls)
    seq: list[int] = []
    for ids in pq.read_table(args.shard).column("ids").to_pylist():
        seq.extend(ids)
        if len(seq) >= args.length:
            break
    ids = torch.tensor([seq[: args.length]])  # (1, T)
    drafter = cls.from_pair(pair)

    def draft_argmax(chunk):  # (1, t) -> (t,) token ids
        return drafter.token_id(drafter.sequence_logits(chunk).float().argmax(-1))

    target = pair.target(input_ids=ids).logits[0].float().argmax(-1)  # (T,)
    whole = draft_argmax(ids)
    chunked = torch.cat([draft_argmax(ids[:, s: s + args.chunk]) for s in range(0, ids.shape[1], args.chunk)])
    for start in range(0, ids.shape[1], 1000):
        end = min(start + 1000, ids.shape[1])
        print(f"positions {start}-{end}: agreement {(whole[start:end] == target[start:end]).float().mean():.3f} "
              f"(whole sequence), {(chunked[start:end] == target[start:end]).float().mean():.3f} "
              f"({args.chunk}-token chunks)")


if __name__ == "__main__":
    main()
