"""The `preference` task: DPO-family, KTO and reward-model training on reasoning-task preference data.

`preference_setup(config)` turns a config into the loop's `Setup`:

1. **Start model.** `model.init = "scratch"` (the preset at `seed`) or `"sft"`: the preset fine-tuned on
   the task's worked solutions (`model.sft`: total_steps, batch_size, optimizer, train_size), run once and
   cached by config hash under `$W2S_JAX_CACHE/sft` (`sft_start_config`, `train.pretrain.pretrain`). It is
   the policy's initialisation and the frozen reference model. `model.dtype` / `attention` / `remat`, when
   set, apply to it (and to its fine-tuning) as to the trained model; `model.lora` only to the trained one.
2. **Pairs.** `data.source = "sampled"`: `data.samples_per_prompt` completions per prompt sampled from
   the start model and scored by the task's scorer (`preference_pairs.sampled_records`); `"perturbed"`:
   worked solutions vs flawed copies, a wrong final answer or cut off before it (`data.perturbations`,
   `preference_pairs.perturbed_records`). Train
   prompts come from the task's train split, held-out pairs from its test split. Records are cached as
   JSONL under `data.cache_dir` (default `$W2S_JAX_CACHE/preference/<hash of data+model>`). `"files"`:
   your own pair files (`data.train_files`, `data.eval_files`; `data.skip_bad_records`), read on every run
   (`preference_pairs.file_records`; KTO gets each chosen completion as desirable, each rejected not).
3. **Reference log-probs** are precomputed once, in one jitted pass over every pair with the start
   model, and stored with the rows (`ref_logps`; for KTO also `ref_kl_logps`). The train step then runs
   only the policy. SimPO, ORPO and the reward model need no reference.
4. **Batches.** `batch_size` pairs per step, as [2·batch_size, L] rows (chosen rows, then the rejected
   rows of the same prompts; one example per row, right-padded); KTO takes 2·batch_size unpaired
   examples plus as many KL rows (each prompt with a fixed other example's completion).
5. **Eval** on held-out pairs; every objective logs `eval_reward_accuracy`, the share of pairs whose
   implicit reward margin is positive: (log π − log π_ref)(chosen) > (log π − log π_ref)(rejected) for
   DPO/IPO/hinge/RPO/KTO, β·mean log π for SimPO/ORPO, the scalar score for the reward model. With the
   start model as reference every margin is zero before training, so the reference-based share starts
   at zero. The runtime's evaluator also scores the start model (step 0, in `eval.jsonl`), and the loop
   logs `eval_loss_start` and `eval_reward_accuracy_start` with every record (`eval_at_start`).

`records_setup` is the same for records and a start model already in hand (w2s_jax/recipes/delta_learning.py).

Objective names (`loss.name`; the other keys of `loss` are the loss's keyword arguments):
the pairwise losses of `preference_objectives.PAIRWISE_INPUTS` (`dpo`, `ipo`, `simpo`, `orpo`, `rpo`,
`hinge`, `robust`...; cDPO is `dpo` with `label_smoothing`), `kto`, and `reward_model` (Bradley–Terry on
`SequenceClassifier(cfg, 1)`, or `ValueModel` with `model.head = "value"`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from w2s_jax.data import packing, preference_pairs
from w2s_jax.data.sft_sources import reasoning_problems, reasoning_prompt
from w2s_jax.data.tokenizers import Tokenizer
from w2s_jax.models.heads import SequenceClassifier, ValueModel
from w2s_jax.models.presets import ModelConfig, from_section
from w2s_jax.models.transformer import Transformer
from w2s_jax.sampling.texts import sample_completions
from w2s_jax.train import preference_objectives as po
from w2s_jax.train import preference_shared, pretrain
from w2s_jax.train.loop import Setup
from w2s_jax.train.step import Batch, Objective
from w2s_jax.train.tasks import make_tokenizer, process_share

Rows = dict[str, np.ndarray]
REFERENCE_FREE = tuple(name for name, entry in po.PREFERENCE_OBJECTIVES.items() if not entry.reference)


# ------------------------------------------------------------------------------------------------
# Rows and batches.
# ------------------------------------------------------------------------------------------------


def encode_rows(
  prompts: Sequence[str], completions: Sequence[str], tokenizer: Tokenizer, seq_len: int
) -> tuple[Rows, np.ndarray]:
  """One right-padded row per (prompt, completion), in the objectives' layout.

  Args:
    prompts, completions: N strings each; the row is `[BOS] + prompt + completion`, targets shifted by
      one and ending in EOS; `loss_mask` is 1 on the completion's targets (EOS included).
    tokenizer: any `Tokenizer`.
    seq_len: L.

  Returns:
    (rows, fits_N): `packing.FIELDS` arrays [N, L] (int32; a row that does not fit is all zeros) and a
    bool [N] saying which rows fit in L tokens.
  """
  n = len(prompts)
  rows = {f: np.zeros((n, seq_len), np.int32) for f in packing.FIELDS}
  fits_N = np.zeros(n, bool)
  for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
    inputs, targets, mask = packing.example_arrays(
      tokenizer.encode(prompt), tokenizer.encode(completion), bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id
    )
    if len(inputs) > seq_len:
      continue
    fits_N[i] = True
    t = len(inputs)
    rows["inputs"][i, :t], rows["targets"][i, :t], rows["loss_mask"][i, :t] = inputs, targets, mask
    rows["positions"][i, :t] = np.arange(t)
    rows["segment_ids"][i, :t] = 1
  return rows, fits_N


@functools.partial(jax.jit, static_argnums=0)
def _reference_logps_jit(graphdef: nnx.GraphDef, params: Any, rows: Rows) -> jax.Array:
  return po.reference_logps(nnx.merge(graphdef, params), rows)


def reference_logps(graphdef: nnx.GraphDef, params: Any, rows: Rows, batch_rows: int) -> np.ndarray:
  """Summed completion log-probs [N] of every row under the frozen start model, `batch_rows` at a time."""
  fn = functools.partial(_reference_logps_jit, graphdef)
  n = len(rows["inputs"])
  out = np.zeros(n, np.float32)
  for start in range(0, n, batch_rows):
    chunk = {k: v[start:start + batch_rows] for k, v in rows.items()}
    real = len(chunk["inputs"])
    if real < batch_rows:
      chunk = {k: np.concatenate([v, np.zeros((batch_rows - real, v.shape[1]), v.dtype)])
               for k, v in chunk.items()}
    out[start:start + real] = np.asarray(fn(params, chunk))[:real]
  return out


def _take(rows: Rows, idx: np.ndarray, prefix: str = "") -> Rows:
  return {f"{prefix}{k}": v[idx] for k, v in rows.items()}


def pair_batch(chosen: Rows, rejected: Rows, ref_N2: np.ndarray | None, idx_B: np.ndarray,
               rows: slice | None = None) -> Batch:
  """[2B, L] rows for pairs `idx_B` (chosen first); `ref_logps` [2B] when `ref_N2` ([N, 2]) is given.

  With `rows` (a process's share of the 2B rows, `pipeline.process_rows`) only those rows are gathered.
  """
  b = len(idx_B)
  lo, hi, _ = (rows or slice(None)).indices(2 * b)
  parts = ((chosen, 0, idx_B[min(lo, b):min(hi, b)]), (rejected, 1, idx_B[max(lo - b, 0):max(hi - b, 0)]))
  batch = {k: np.concatenate([src[k][idx] for src, _, idx in parts]) for k in chosen}
  if ref_N2 is not None:
    batch[po.REF_LOGPS] = np.concatenate([ref_N2[idx, col] for _, col, idx in parts]).astype(np.float32)
  return batch


def _stream(n: int, batch: int, seed: int, make: Callable[[np.ndarray], Batch]) -> grain.MapDataset:
  if n < batch:
    raise ValueError(f"only {n} training examples for a batch of {batch}: add data or shrink batch_size")
  ds = grain.MapDataset.source(range(n)).shuffle(seed=seed).repeat(None).batch(batch, drop_remainder=True)
  return ds.map(lambda idx: make(np.asarray(idx)))


def _pad_pairs(chosen: Rows, rejected: Rows, ref_N2: np.ndarray, multiple: int):
  """Appends all-zero pairs (weight 0 in every objective) so the count is a multiple of `multiple`."""
  extra = -len(ref_N2) % multiple
  pad = lambda v: np.concatenate([v, np.zeros((extra, *v.shape[1:]), v.dtype)])
  return ({k: pad(v) for k, v in chosen.items()}, {k: pad(v) for k, v in rejected.items()}, pad(ref_N2))


# ------------------------------------------------------------------------------------------------
# Objectives with the held-out reward accuracy.
# ------------------------------------------------------------------------------------------------


def with_reward_accuracy(objective: Objective, name: str) -> Objective:
  """Adds `reward_accuracy` (share of pairs with a positive implicit reward margin) on pair batches.

  Pairwise objectives and the reward model already compute it (their entry's `accuracy` metric:
  `rewards/accuracies`, `accuracy`); KTO's train batches are unpaired (they carry `desirable`), so on pair
  batches (the eval batches) the summed-log-prob margin against `ref_logps` is computed here with one
  more forward pass.
  """
  accuracy = po.PREFERENCE_OBJECTIVES[name].accuracy

  def wrapped(model: nnx.Module, batch: Batch, rng: jax.Array):
    loss_sum, weight, sums = objective(model, batch, rng)
    sums = dict(sums)
    if accuracy is not None:
      sums["reward_accuracy"] = sums[accuracy]
    elif "desirable" not in batch:
      logps_2B, count_2B = po.batch_logps(model, batch)
      margin_2B = logps_2B - batch[po.REF_LOGPS].astype(jnp.float32)
      half = margin_2B.shape[0] // 2
      real_B = ((count_2B[:half] > 0) & (count_2B[half:] > 0)).astype(jnp.float32)
      right_B = (margin_2B[:half] > margin_2B[half:]).astype(jnp.float32)
      pairs = jnp.maximum(jnp.sum(real_B), 1.0)  # per-pair mean after the step divides by `weight`
      sums["reward_accuracy"] = jax.lax.stop_gradient(jnp.sum(right_B * real_B) * weight / pairs)
    return loss_sum, weight, sums

  return wrapped


def make_objective(objective_cfg: dict[str, Any]) -> tuple[str, Objective]:
  """(name, objective) from the config's `loss` section (name + the loss's keyword arguments)."""
  cfg = dict(objective_cfg)
  name = cfg.pop("name")
  if name not in po.PREFERENCE_OBJECTIVES:
    raise ValueError(
      f"unknown preference objective {name!r}; choose one of {sorted(po.PREFERENCE_OBJECTIVES)}"
    )
  return name, with_reward_accuracy(po.PREFERENCE_OBJECTIVES[name](**cfg), name)


# ------------------------------------------------------------------------------------------------
# Start model and records.
# ------------------------------------------------------------------------------------------------


def _hash(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def start_params(
  make_model: Callable[[nnx.Rngs], nnx.Module], params: Any, seed: int, *, backbone: bool = False
) -> Callable[[], Any]:
  """A `Setup.init_params` that starts `make_model`'s model from `params` (its decoder's, if `backbone`).

  The model is built when the loop calls it, inside the loop's mesh context (so parameters carry its
  sharding), then filled with the values of `params`; with `backbone` only the `backbone` subtree is
  (a reward model: the start decoder under a freshly initialised head).
  """
  values = nnx.to_pure_dict(params)

  def init_params() -> Any:
    _, state = nnx.split(make_model(nnx.Rngs(seed)))
    (state["backbone"] if backbone else state).replace_by_pure_dict(values)
    return state

  return init_params


SHORTCUTS = ("dtype", "attention", "remat")  # the model section's compute shortcuts (`from_section`)


def sft_start_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The `train.pretrain` config of the `model.init = "sft"` start (its hash names the cached folder).

  The compute shortcuts (`model.dtype` / `attention` / `remat`) go into it only when set, so unset ones
  leave the folder's identity as it was before they were declared; `model.lora` never does (the start is
  a full fine-tune; adapters are the preference run's).
  """
  m, s = config.model, config.model.sft
  c = pretrain.pretrain_config(
    m.preset, corpus=config.data.task, tokenizer=config.data.tokenizer, vocab_size=m.vocab_size,
    seq_len=config.data.seq_len, steps=int(s.total_steps), batch_size=int(s.batch_size),
    optimizer=s.optimizer, seed=config.seed, mesh=dict(config.mesh),
    corpus_options={"train_size": s.train_size, "eval_size": s.get("eval_size", 64),
                    "seed": config.data.seed, "overlong": "drop"},
  )
  c.model.overrides.update(dict(m.get("overrides", {})))
  c.model.update({k: m[k] for k in SHORTCUTS if m.get(k) is not None})
  return c


def start_model(config: ml_collections.ConfigDict) -> tuple[ModelConfig, nnx.GraphDef, Any]:
  """(model config, graphdef, params) of the decoder training starts from and the reference model."""
  m = config.model
  if m.init == "scratch":
    cfg = from_section(m)
    graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(config.seed)))
    return cfg, graphdef, params
  if m.init != "sft":
    raise ValueError(f"unknown model.init {m.init!r}; choose 'scratch' or 'sft'")
  rung = pretrain.pretrain(sft_start_config(config), pretrain.cache_root() / "sft")
  return rung.model_cfg, rung.graphdef, jax.device_get(rung.params)


def records_key(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What names the preference records' cache folder: data, model and seed.

  Unset (None) model keys and `model.lora` are left out: the records are sampled from the start model,
  which adapters do not change, and an unset shortcut leaves a cache folder's name as it was.
  """
  model = {k: v for k, v in json.loads(config.model.to_json_best_effort()).items()
           if v is not None and k != "lora"}
  return {"data": json.loads(config.data.to_json_best_effort()), "model": model, "seed": config.seed}


def preference_records(
  config: ml_collections.ConfigDict, tokenizer: Tokenizer, graphdef: nnx.GraphDef, params: Any
) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], dict[str, Any], Path]:
  """Train/eval preference records of the config (built once, then read from the JSONL cache)."""
  d = config.data
  if d.source == "files":  # users' pair files: read (and validated) on every run, never cached
    skip = bool(d.get("skip_bad_records", False))
    read = {split: preference_pairs.file_records(d.get(f"{split}_files", ""), skip_bad_records=skip)
            for split in ("train", "eval")}
    return {k: v[0] for k, v in read.items()}, {k: v[1] for k, v in read.items()}, Path(d.train_files)
  directory = (Path(d.cache_dir) if d.get("cache_dir")
               else pretrain.cache_root() / "preference" / _hash(records_key(config)))
  sizes = {"train": int(d.train_size), "eval": int(d.eval_size)}

  def build(split: str):
    problems = reasoning_problems(d.task, split, size=sizes[split], train_size=sizes["train"],
                                  seed=int(d.seed))
    if d.source == "perturbed":
      kinds = tuple(d.get("perturbations", preference_pairs.PERTURBATIONS))
      return preference_pairs.perturbed_records(problems, kinds=kinds, seed=int(d.seed))
    if d.source != "sampled":
      raise ValueError(f"unknown data.source {d.source!r}; choose 'sampled', 'perturbed' or 'files'")
    completions = sample_completions(
      graphdef, params, tokenizer, [reasoning_prompt(p) for p in problems], n=int(d.samples_per_prompt),
      max_new_tokens=int(d.max_new_tokens), temperature=float(d.temperature),
      seed=int(d.seed) + (split == "eval"),
    )
    return preference_pairs.sampled_records(
      problems, completions, max_pairs_per_prompt=int(d.max_pairs_per_prompt),
      correct_at=float(d.correct_at), seed=int(d.seed),
    )

  records, stats = preference_pairs.cached_records(directory, ("train", "eval"), build)
  return records, stats, directory


# ------------------------------------------------------------------------------------------------
# The setup.
# ------------------------------------------------------------------------------------------------


def _pairs_rows(pairs: list[dict[str, Any]], tokenizer: Tokenizer, seq_len: int) -> tuple[Rows, Rows, int]:
  prompts = [p["prompt"] for p in pairs]
  chosen, fit_c = encode_rows(prompts, [p["chosen"] for p in pairs], tokenizer, seq_len)
  rejected, fit_r = encode_rows(prompts, [p["rejected"] for p in pairs], tokenizer, seq_len)
  keep = fit_c & fit_r
  return _take(chosen, keep), _take(rejected, keep), int(np.sum(~keep))


def _unpaired_rows(examples: list[dict[str, Any]], tokenizer: Tokenizer, seq_len: int, seed: int):
  """Rows of the KTO examples, their labels, and KL rows (prompt i with example perm[i]'s completion)."""
  rows, fits = encode_rows([e["prompt"] for e in examples], [e["completion"] for e in examples], tokenizer,
                           seq_len)
  kept = [e for e, f in zip(examples, fits, strict=True) if f]
  rows = _take(rows, fits)
  n = len(kept)
  order = np.random.default_rng(seed).permutation(n)
  partner = np.empty(n, np.int64)
  partner[order] = np.roll(order, 1)  # a derangement for n >= 2: nobody is paired with itself
  kl_rows, _ = encode_rows([e["prompt"] for e in kept], [kept[j]["completion"] for j in partner], tokenizer,
                           seq_len)
  desirable = np.asarray([bool(e["label"]) for e in kept])
  return rows, kl_rows, desirable, len(examples) - n


def preference_setup(config: ml_collections.ConfigDict) -> Setup:
  """The loop's `Setup` for a `task = "preference"` config (see the module docstring)."""
  tokenizer = make_tokenizer(config.data.tokenizer)
  make_objective(config.loss.to_dict())  # fail on a bad objective before any training or sampling
  cfg, graphdef, params = start_model(config)
  if cfg.vocab_size < tokenizer.vocab_size:
    raise ValueError(f"model vocab {cfg.vocab_size} < tokenizer vocab {tokenizer.vocab_size}")
  records, stats, cache_dir = preference_records(config, tokenizer, graphdef, params)
  for split in ("train", "eval"):
    if not records[split]["pairs"]:
      raise ValueError(
        f"no {split} preference pairs in {cache_dir}: a pair needs a correct and an incorrect completion of "
        f"one prompt (build stats: {stats.get(split)}); with sample_accuracy near 0 or 1, fine-tune the "
        "start model more or less (model.sft.total_steps), sample more (data.samples_per_prompt), or use "
        "data.source='perturbed'"
      )
  setup = records_setup(
    records, cfg, graphdef, params, tokenizer, objective=config.loss.to_dict(),
    batch_size=int(config.batch_size), seq_len=int(config.data.seq_len),
    eval_batches=int(config.data.eval_batches), seed=int(config.seed),
    head=config.model.get("head", "classifier"), eval_at_start=bool(config.get("eval_at_start", True)),
    process=process_share(config, 2 * int(config.batch_size)),  # several processes: each reads its rows
    shared_prompt=config.get("shared_prompt", True) and preference_shared.shards_divide(config.mesh,
                                                                                        int(config.batch_size)),
  )
  setup.info["data"].update({"cache": str(cache_dir), "build": stats})
  return setup


def _unpaired_stream(
  examples: list[dict[str, Any]], tokenizer: Tokenizer, seq_len: int, seed: int, graphdef: nnx.GraphDef,
  params: Any, rows_per_batch: int, process: slice | None = None,
) -> tuple[grain.MapDataset, int, int]:
  """KTO's train stream of unpaired examples with their mismatched KL rows and reference log-probs.

  Returns:
    (stream of batches of `rows_per_batch` examples, number of examples, examples dropped as overlong).
  """
  rows, kl_rows, desirable, dropped = _unpaired_rows(examples, tokenizer, seq_len, seed)
  ref, ref_kl = (reference_logps(graphdef, params, r, rows_per_batch) for r in (rows, kl_rows))

  def make(idx: np.ndarray) -> Batch:
    idx = idx[process or slice(None)]  # this process's examples of the batch
    return {**_take(rows, idx), **_take(kl_rows, idx, "kl_"), "desirable": desirable[idx],
            po.REF_LOGPS: ref[idx], "ref_kl_logps": ref_kl[idx]}

  return _stream(len(desirable), rows_per_batch, seed, make), len(desirable), dropped


def _model_maker(
  spec: po.PreferenceObjective, cfg: ModelConfig, head: str
) -> Callable[[nnx.Rngs], nnx.Module]:
  """The trained model: the decoder, or for a reward head `SequenceClassifier(cfg, 1)` / `ValueModel`."""
  if spec.head == "reward":
    if head not in ("classifier", "value"):
      raise ValueError(f"unknown model.head {head!r}; choose 'classifier' or 'value'")

    def make_model(rngs: nnx.Rngs) -> nnx.Module:
      return SequenceClassifier(cfg, 1, rngs=rngs) if head == "classifier" else ValueModel(cfg, rngs=rngs)

  else:
    def make_model(rngs: nnx.Rngs) -> nnx.Module:
      return Transformer(cfg, rngs=rngs)

  return make_model


def records_setup(
  records: dict[str, dict[str, list[dict[str, Any]]]],
  cfg: ModelConfig,
  graphdef: nnx.GraphDef,
  params: Any,
  tokenizer: Tokenizer,
  *,
  objective: dict[str, Any],
  batch_size: int,
  seq_len: int,
  eval_batches: int,
  seed: int,
  head: str = "classifier",
  eval_at_start: bool = True,
  process: slice | None = None,
  shared_prompt: bool = False,
) -> Setup:
  """The loop's `Setup` for preference records and a start model (also the frozen reference).

  Args:
    records: {"train": {"pairs": [...], "unpaired": [...]}, "eval": {"pairs": [...], ...}} as
      `preference_pairs` builds them (KTO trains on the train split's unpaired examples).
    cfg, graphdef, params: the start decoder.
    tokenizer: any `Tokenizer`.
    objective: `name` plus the loss's keyword arguments.
    batch_size: pairs per step (2·batch_size rows; KTO: 2·batch_size examples).
    seq_len: L; longer pairs or examples are dropped and counted (`pairs_dropped_overlong`).
    eval_batches: at most this many held-out batches of `batch_size` pairs.
    seed: shuffling seed (and the fresh head's initialisation for the reward model).
    head: the reward model's head, "classifier" or "value".
    eval_at_start: evaluate the start model too (`eval_loss_start`, `eval_reward_accuracy_start`).
    process: this process's rows of each [2·batch_size] batch (`tasks.process_share`); None = all.
    shared_prompt: pairwise losses on one process get their batches in the shared-prompt form
      (`preference_shared`: each pair's prompt runs once; equal to the rows up to rounding).
  """
  name, objective_fn = make_objective(objective)
  train_c, train_r, dropped_train = _pairs_rows(records["train"]["pairs"], tokenizer, seq_len)
  eval_c, eval_r, dropped_eval = _pairs_rows(records["eval"]["pairs"], tokenizer, seq_len)
  if len(eval_c["inputs"]) == 0:
    raise ValueError(f"none of {len(records['eval']['pairs'])} held-out pairs fits in seq_len={seq_len}: "
                     "add held-out prompts or raise seq_len")
  rows_per_batch = 2 * batch_size
  spec = po.PREFERENCE_OBJECTIVES[name]

  def refs(chosen: Rows, rejected: Rows) -> np.ndarray | None:
    if not spec.reference:
      return None
    both = {k: np.concatenate([chosen[k], rejected[k]]) for k in chosen}
    ref = reference_logps(graphdef, params, both, rows_per_batch)
    return np.stack([ref[: len(ref) // 2], ref[len(ref) // 2:]], axis=1)

  n_eval_pairs, eval_ref = len(eval_c["inputs"]), refs(eval_c, eval_r)
  eval_c, eval_r, eval_ref_N2 = _pad_pairs(
    eval_c, eval_r, np.zeros((n_eval_pairs, 2), np.float32) if eval_ref is None else eval_ref, batch_size
  )
  eval_ref_N2 = eval_ref_N2 if spec.reference else None
  shared = shared_prompt and process is None and name in po.PAIRWISE_INPUTS  # one process: whole pairs
  share = preference_shared.prompt_sharer(train_c, train_r, eval_c, eval_r) if shared else (lambda b: b)
  held_out = [
    share(pair_batch(eval_c, eval_r, eval_ref_N2, np.arange(i * batch_size, (i + 1) * batch_size), process))
    for i in range(min(len(eval_c["inputs"]) // batch_size, eval_batches))
  ]

  if spec.train_data == "unpaired":
    train, n_train, dropped_train = _unpaired_stream(
      records["train"]["unpaired"], tokenizer, seq_len, seed, graphdef, params, rows_per_batch, process)
  else:
    train_ref = refs(train_c, train_r)
    train = _stream(len(train_c["inputs"]), batch_size, seed,
                    lambda idx: share(pair_batch(train_c, train_r, train_ref, idx, process)))
    n_train = len(train_c["inputs"])

  make_model = _model_maker(spec, cfg, head)
  init_params = start_params(make_model, params, seed, backbone=spec.head == "reward")

  info = {"data": {"train_examples": n_train, "eval_pairs": n_eval_pairs, "objective": name},
          "metrics": {"pairs_dropped_overlong": dropped_train + dropped_eval}}
  return Setup(make_model=make_model, objective=objective_fn, train_batches=train, eval_batches=held_out,
               global_rows=None if shared else rows_per_batch, info=info, init_params=init_params,
               start_eval=("eval_loss", "eval_reward_accuracy") if eval_at_start else ())
