"""Looking for a weak-to-strong setting with a real strong-vs-weak ceiling gap on the 2-core CPU.

COMMAND (one measurement; the numbers go to experiments/w2s_signal.jsonl with the arguments):
  nice -n 10 python experiments/w2s_signal.py --task=chain_sum_3x1 --sizes=ladder-0,ladder-1 \
      --pre_steps=600 [--no_clf]
For each rung: pretrain it (cached by config hash) on the task's focused corpus (`w2s:<task>`), report
its held-out LM loss on the task's worked solutions and how often its greedy answer to a test question
is exactly right (`lm_exact`: the arithmetic it knows), then train the ground-truth classifier on half A
(seed 0) and report its test accuracy (that size's ceiling).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from w2s_jax.data import w2s_sets
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.train import pretrain
from w2s_jax.train.pretrain import Rung
from w2s_jax.w2s import classify, protocol

LOG = Path(__file__).with_suffix(".jsonl")


def answer_exact_match(rung: Rung, records: list[dict]) -> float:
  """Share of correct-candidate records whose answer bytes are all the LM's argmax given what precedes."""
  tok = ByteTokenizer()
  pos = [r for r in records if r["hard_label"] == 1]
  seqs = [[tok.bos_id, *tok.encode(r["txt"])] for r in pos]
  n_ans = [len(tok.encode(r["candidate"])) for r in pos]
  t = np.full((len(seqs), max(map(len, seqs))), tok.pad_id, np.int32)
  seg = np.zeros_like(t)
  for i, s in enumerate(seqs):
    t[i, :len(s)], seg[i, :len(s)] = s, 1
  fn = jax.jit(lambda p, t, s: nnx.merge(rung.graphdef, p)(t, segment_ids_BL=s).argmax(-1))
  pred = np.concatenate([np.asarray(fn(rung.params, t[i:i + 64], seg[i:i + 64]))
                         for i in range(0, len(t), 64)])
  ok = [all(pred[i, len(s) - k - 1 + j] == s[len(s) - k + j] for j in range(k))
        for i, (s, k) in enumerate(zip(seqs, n_ans, strict=True))]
  return float(np.mean(ok))


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--task", default="chain_sum_3x1")
  ap.add_argument("--sizes", default="ladder-0,ladder-1")
  ap.add_argument("--pre_steps", type=int, default=600)
  ap.add_argument("--pre_bs", type=int, default=16)
  ap.add_argument("--pre_lr", type=float, default=3e-3)
  ap.add_argument("--seq_len", type=int, default=64)
  ap.add_argument("--problems", type=int, default=1600)
  ap.add_argument("--mode", default="finetune")
  ap.add_argument("--n_train", type=int, default=1600)
  ap.add_argument("--n_test", type=int, default=500)
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--bs", type=int, default=32)
  ap.add_argument("--lr", type=float, default=5e-4)
  ap.add_argument("--max_len", type=int, default=40)
  ap.add_argument("--no_clf", action="store_true")
  ap.add_argument("--tag", default="")
  a = ap.parse_args()
  t0 = time.time()
  train_r, test_r = w2s_sets.generate_splits(a.task, a.n_train, a.n_test, seed=0)
  tok = ByteTokenizer()
  train, test = classify.encode(train_r, tok, a.max_len), classify.encode(test_r, tok, a.max_len)
  print("examples:", [r["txt"] for r in train_r[:3]], "truncated", train.truncated + test.truncated)
  spec = protocol.TrainSpec(mode=a.mode, steps=a.steps, batch_size=a.bs, lr=a.lr, mesh={"data": 1})
  wd = Path("runs/w2s_signal") / f"{a.task}-{a.mode}-{a.tag}-{int(time.time())}"
  a_idx, _ = protocol.split_halves(len(train), 0)
  out = {"args": vars(a), "rungs": {}}
  for name in a.sizes.split(","):
    t1 = time.time()
    pcfg = pretrain.pretrain_config(
      name, corpus=f"w2s:{a.task}", tokenizer="bytes", vocab_size=512, seq_len=a.seq_len, steps=a.pre_steps,
      batch_size=a.pre_bs, lr=a.pre_lr, seed=0, mesh={"data": 1}, corpus_options={"problems": a.problems})
    rung = pretrain.pretrain(pcfg, Path("runs/w2s_signal_cache/ladder"))
    t2 = time.time()
    res = {}
    if not a.no_clf:
      sweep = protocol.Sweep([rung], train, test, spec, wd)
      _, res = sweep.fit(f"gt-{name}", rung, train.take(a_idx), "xent", 0)
    out["rungs"][name] = {"lm_loss": rung.eval_loss, "lm_exact": answer_exact_match(rung, test_r),
                          "acc": res.get("accuracy"), "auroc": res.get("auroc"),
                          "pretrain_s": round(t2 - t1), "clf_s": round(time.time() - t2)}
    print(name, out["rungs"][name], flush=True)
  out["wall_s"] = round(time.time() - t0)
  with LOG.open("a") as f:
    f.write(json.dumps(out) + "\n")
  print(json.dumps(out))


if __name__ == "__main__":
  main()
