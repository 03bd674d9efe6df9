"""Weak-to-strong with small students on cached SmolLM2 features: the study behind the quickstart's table.

COMMAND:
  python experiments/w2s_probe_study.py features --task=sentence_reordering:any --out=runs/sr_any.npz
  python experiments/w2s_probe_study.py sweep --features=runs/sr_any.npz --seeds=0,1,2 --pairs=2:8,2:16,4:16
  (options of `sweep`: --student=probe|mlp, --lam, --student-lam, --steps, --weak-pool=last|mean,
   --label-filter=knn_relabel|knn_drop|probe_relabel|..., --pool=last|mean)

`features` writes SmolLM2-135M's residual stream after blocks 1, 2, 3, 4, 6, 8, 12 and 16 (last token and
mean over tokens) for verification texts of a reasoning-gym task: `sentence_reordering` ("Sentence: <c>", c
the sentence or it with one adjacent pair of words swapped; `sentence_reordering:any` swaps any two words),
`spell_backward` (adjacent letters swapped), `syllogism` (the other answer) or numeric tasks (near misses).
`sweep` runs Burns et al.'s protocol with logistic-regression (or one-hidden-layer MLP) students on
standardized features: per seed, 1/5 of the texts for test, the rest split into halves A (ground truth) and
B (weak labels); PGR = (transfer − weak) / (strong − weak), medians with 95 % bootstrap CIs.
"""

from __future__ import annotations

import argparse
import random
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import reasoning_gym
from flax import nnx

from w2s_jax.evals.metrics import bootstrap_ci
from w2s_jax.models import convert
from w2s_jax.models.transformer import attention_mask
from w2s_jax.w2s.label_filters import apply_label_filter

LAYERS = (1, 2, 3, 4, 6, 8, 12, 16)


def _swap(words: list[str], rng: random.Random, anywhere: bool) -> list[str]:
  i, j = rng.sample(range(len(words)), 2) if anywhere else (k := rng.randrange(len(words) - 1), k + 1)
  out = list(words)
  out[i], out[j] = out[j], out[i]
  return out


def _candidate(task: str, variant: str, entry: dict, right: bool, rng: random.Random) -> str | None:
  gold = str(entry["answer"])
  if right:
    return gold
  if task == "sentence_reordering":
    words = gold.split()
    return " ".join(_swap(words, rng, variant == "any")) if len(words) >= 3 else None
  if task == "spell_backward":
    j = rng.randrange(len(gold) - 1) if len(gold) >= 3 else None
    return None if j is None else gold[:j] + gold[j + 1] + gold[j] + gold[j + 2:]
  if task == "syllogism":
    return "No" if gold == "Yes" else "Yes"
  a = int(gold)
  return str(rng.choice([a + 1, a - 1, a + 2, a - 2, a + 10, max(a - 10, 0)]))


def make_texts(spec: str, questions: int, seed: int) -> tuple[list[str], np.ndarray]:
  """Verification texts of `spec` (`task` or `task:variant`) and their labels (1 = the right answer)."""
  task, _, variant = spec.partition(":")
  ds = reasoning_gym.create_dataset(task, size=questions, seed=seed)
  rng, seen, texts, labels = random.Random(seed), set(), [], []
  for i in range(questions):
    entry = ds[i]
    if entry["question"] in seen:
      continue
    seen.add(entry["question"])
    right = rng.random() < 0.5
    cand = _candidate(task, variant, entry, right, rng)
    if cand is None or (not right and cand == str(entry["answer"])):
      continue
    question = entry["question"].strip()
    texts.append(f"Sentence: {cand}" if task == "sentence_reordering" else f"{question}\nAnswer: {cand}")
    labels.append(int(right))
  return texts, np.array(labels)


def features(args: argparse.Namespace) -> None:
  model, tok = convert.load_gguf(convert.smollm2_gguf_path())
  texts, labels = make_texts(args.task, args.questions, args.seed)
  ids = [tok.encode(t) for t in texts]
  lens = np.array([len(x) for x in ids])
  graphdef, params = nnx.split(model)

  @jax.jit
  def forward(params, tokens_BL, seg_BL, last_B):
    m = nnx.merge(graphdef, params)
    B, L = tokens_BL.shape
    idx_BL = jnp.broadcast_to(jnp.arange(L)[None], (B, L))
    mask = attention_mask(seg_BL, seg_BL, idx_BL, idx_BL)
    x_BLD, w_BL1 = m.embed(tokens_BL), seg_BL[..., None].astype(jnp.float32)
    last, mean = [], []
    for i in range(max(LAYERS)):
      x_BLD = m.blocks[i](x_BLD, idx_BL, mask)
      if i + 1 in LAYERS:
        last.append(x_BLD[jnp.arange(B), last_B])
        mean.append((x_BLD * w_BL1).sum(1) / w_BL1.sum(1))
    return jnp.stack(last, 1), jnp.stack(mean, 1)

  order, B = np.argsort(lens), 32
  last = np.zeros((len(texts), len(LAYERS), model.cfg.d_model), np.float32)
  mean = np.zeros_like(last)
  start = time.perf_counter()
  for s in range(0, len(texts), B):
    rows = order[s:s + B]
    L = -(-int(lens[rows].max()) // 8) * 8
    tokens, seg, last_B = np.zeros((B, L), np.int32), np.zeros((B, L), np.int32), np.zeros(B, np.int32)
    for r, j in enumerate(rows):
      tokens[r, :lens[j]], seg[r, :lens[j]], last_B[r] = ids[j], 1, lens[j] - 1
    a, b = forward(params, tokens, seg, last_B)
    last[rows], mean[rows] = np.asarray(a)[:len(rows)], np.asarray(b)[:len(rows)]
  print(f"{len(texts)} texts, {lens.mean():.1f} tokens on average, {time.perf_counter() - start:.0f} s")
  np.savez(args.out, last=last, mean=mean, labels=labels, layers=np.array(LAYERS))


def fit(X_NF: np.ndarray, Y_NC: np.ndarray, lam: float, steps: int, hidden: int, seed: int):
  """A logistic-regression (or MLP) student on soft targets, L2 penalty `lam`, full-batch Adam."""
  F = X_NF.shape[1]
  p = {"W": jnp.zeros((hidden or F, 2)), "b": jnp.zeros(2)}
  if hidden:
    p |= {"W1": jax.random.normal(jax.random.key(seed), (F, hidden)) / np.sqrt(F), "b1": jnp.zeros(hidden)}

  def logits(p, X):
    h = jax.nn.gelu(X @ p["W1"] + p["b1"]) if "W1" in p else X
    return h @ p["W"] + p["b"]

  def loss(p):
    xent = -(Y_NC * jax.nn.log_softmax(logits(p, X_NF))).sum(-1).mean()
    return xent + lam * sum((v**2).sum() for k, v in p.items() if k.startswith("W"))

  tx = optax.adam(1e-2)
  state = tx.init(p)

  @jax.jit
  def step(p, state):
    updates, state = tx.update(jax.grad(loss)(p), state, p)
    return optax.apply_updates(p, updates), state

  for _ in range(steps):
    p, state = step(p, state)
  return lambda Z: np.asarray(jax.nn.softmax(logits(p, Z)))


def sweep(args: argparse.Namespace) -> None:
  d = np.load(args.features)
  y, layers = d["labels"], [int(k) for k in d["layers"]]
  pairs = [tuple(int(v) for v in p.split(":")) for p in args.pairs.split(",")]
  hidden = 256 if args.student == "mlp" else 0
  rows: dict[tuple[int, int], list[tuple[float, float, float, float]]] = {}
  for seed in (int(s) for s in args.seeds.split(",")):
    perm = np.random.default_rng(seed).permutation(len(y))
    test, train = perm[: len(y) // 5], perm[len(y) // 5:]
    A, B = train[: len(train) // 2], train[len(train) // 2:]

    def standard(pool: str, layer: int, A: np.ndarray = A) -> np.ndarray:
      X = d[pool][:, layers.index(layer)]
      return (X - X[A].mean(0)) / (X[A].std(0) + 1e-6)

    onehot = np.eye(2)[y]
    for wl, sl in pairs:
      Xw, Xs = standard(args.weak_pool, wl), standard(args.pool, sl)
      weak = fit(Xw[A], onehot[A], args.lam, 300, 0, seed)
      strong = fit(Xs[A], onehot[A], args.lam, 300, 0, seed)
      labels, XB = weak(Xw[B]).astype(np.float32), Xs[B]
      if args.label_filter != "none":
        labels, keep = apply_label_filter(args.label_filter, XB, labels, seed=seed)
        labels, XB = labels[keep], XB[keep]
      student = fit(XB, labels, args.student_lam, args.steps, hidden, seed)
      models = ((weak, Xw), (strong, Xs), (student, Xs))
      acc = [float((f(X[test]).argmax(1) == y[test]).mean()) for f, X in models]
      rows.setdefault((wl, sl), []).append((*acc, (acc[2] - acc[0]) / (acc[1] - acc[0])))
  for (wl, sl), v in rows.items():
    v = np.array(v)
    med, lo, hi = bootstrap_ci(v[:, 3])
    print(f"block {wl} -> {sl}: weak {100 * v[:, 0].mean():.1f} strong {100 * v[:, 1].mean():.1f} "
          f"transfer {100 * v[:, 2].mean():.1f} % PGR {med:.2f} [{lo:.2f}, {hi:.2f}]",
          f"per seed {np.round(v[:, 3], 2).tolist()}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="cmd", required=True)
  f = sub.add_parser("features")
  f.add_argument("--task", default="sentence_reordering:any")
  f.add_argument("--questions", type=int, default=6000)
  f.add_argument("--seed", type=int, default=1234)
  f.add_argument("--out", required=True)
  s = sub.add_parser("sweep")
  s.add_argument("--features", required=True)
  s.add_argument("--seeds", default="0,1,2")
  s.add_argument("--pairs", default="2:8,2:16,4:16")
  s.add_argument("--student", choices=("probe", "mlp"), default="probe")
  s.add_argument("--lam", type=float, default=1.0)
  s.add_argument("--student-lam", type=float, default=1.0)
  s.add_argument("--steps", type=int, default=300)
  s.add_argument("--pool", choices=("last", "mean"), default="last")
  s.add_argument("--weak-pool", choices=("last", "mean"), default="last")
  s.add_argument("--label-filter", default="none")
  args = parser.parse_args()
  (features if args.cmd == "features" else sweep)(args)


if __name__ == "__main__":
  main()
