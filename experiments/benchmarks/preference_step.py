"""DPO step time of w2s_jax vs TRL's `DPOTrainer` and Tunix's `DPOTrainer`, same weights, same run.

COMMAND:
  python experiments/benchmarks/preference_step.py --tunix-python=/work/venvs/tunix/bin/python  # ~2 min
  python experiments/benchmarks/preference_step.py --repeats=2 --no-tunix                       # check

Needs TRL (`pip install -e '.[bench]'`); without it the JSON says `"trl": "unavailable (...)"`.
The model is a random transformers Llama of the peer shape (preset `perf-4m`: vocab 512, d 256, 4
layers, 4 heads, FFN 1024), saved as safetensors and loaded by all three. One step: `--pairs` pairs of a
`--prompt`-token prompt and two `--completion`-token completions (random tokens, no padding), the
frozen reference's summed completion log-probs, the sigmoid DPO loss (beta 0.1) and one AdamW update of
the policy (lr 1e-6, f32). Systems:
  ours_with_ref  the reference forward and the jitted step per batch (what TRL and Tunix do per step);
  ours_ref_in_step  the same work as one jitted program (reference forward + step): one dispatch, and
                 XLA may run the reference forward's ops alongside the policy's;
  ours           the jitted step alone, reference log-probs precomputed once (how w2s_jax's preference
                 task trains: it stores them with the rows);
  trl            `DPOTrainer.training_step` (TRL's collator output -> `compute_loss` with the reference
                 model -> backward) + `optimizer.step()`: the body of its train loop, without logging;
  tunix          `DPOTrainer._prepare_inputs` (reference log-probs) + its jitted train step.
  ours_with_ref@ATTENTION  `ours_with_ref` with `model.attention` = ATTENTION, for each further entry of
                 `--attentions` (default "einsum,blocked"; the first is the model of the other systems);
  ours_with_ref@rows  `ours_with_ref` on the [2B, L] rows (the path before `shared_prompt`).
Our systems take the batch in the shared-prompt form (`shared_prompt`, the preference task's default:
`train.preference_shared.share_prompts`, each pair's prompt run once by the policy and the reference);
`forward_tokens` counts the token slots one forward pass covers in each form.
All are interleaved in each of `--repeats` rounds after 2 warm-up steps each; medians with min-max.
The JSON records the load average before and after and `"loaded": true` when it exceeded the cores.
The last output line is one JSON object; `speedup_vs_trl` / `speedup_vs_tunix` use `ours_with_ref`
(`..._ATTENTION` those of `ours_with_ref@ATTENTION`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).parent))
from _bench import add_tunix_flag, cores, interleaved_times, load_record, spread, start_tunix  # noqa: E402

from w2s_jax.models import _hf_mapping  # noqa: E402
from w2s_jax.models.presets import get_preset  # noqa: E402
from w2s_jax.models.transformer import Transformer  # noqa: E402
from w2s_jax.train import preference_objectives as po  # noqa: E402
from w2s_jax.train.preference_shared import pair_lengths, share_prompts  # noqa: E402
from w2s_jax.train.state import create_train_state  # noqa: E402
from w2s_jax.train.step import make_train_step  # noqa: E402

BETA, LR = 0.1, 1e-6


def write_checkpoint(path: Path) -> None:
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM

  cfg = get_preset("perf-4m")
  torch.manual_seed(0)
  LlamaForCausalLM(LlamaConfig(
    vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
    num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
    head_dim=cfg.head_dim, tie_word_embeddings=True, max_position_embeddings=cfg.max_seq_len,
    rms_norm_eps=cfg.norm_eps, rope_theta=1e6, bos_token_id=1, eos_token_id=2, pad_token_id=0,
  )).save_pretrained(path)


def make_pairs(n: int, prompt: int, completion: int, vocab: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  draw = lambda length: rng.integers(3, vocab, size=(n, length)).astype(np.int32)
  return {"prompt": draw(prompt), "chosen": draw(completion), "rejected": draw(completion)}


def pair_rows(pairs: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """The [2B, L] chosen-then-rejected rows of `preference_objectives` (no padding)."""
  p = pairs["prompt"].shape[1]
  seq = np.concatenate([np.concatenate([pairs["prompt"], pairs[k]], 1) for k in ("chosen", "rejected")], 0)
  n, length = seq.shape[0], seq.shape[1] - 1
  loss_mask = np.zeros((n, length), np.int32)
  loss_mask[:, p - 1:] = 1  # targets p .. end are completion tokens
  rows = {"inputs": seq[:, :-1], "targets": seq[:, 1:], "loss_mask": loss_mask,
          "positions": np.broadcast_to(np.arange(length, dtype=np.int32), (n, length)).copy(),
          "segment_ids": np.ones((n, length), np.int32)}
  return {k: jnp.asarray(v) for k, v in rows.items()}


def shared_rows(rows: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """`rows` in the shared-prompt form (`preference_shared.share_prompts`)."""
  host = {k: np.asarray(v) for k, v in rows.items()}
  half = len(host["inputs"]) // 2
  lengths = pair_lengths({k: v[:half] for k, v in host.items()}, {k: v[half:] for k, v in host.items()})
  return {k: jnp.asarray(v) for k, v in share_prompts(host, *lengths).items()}


def jax_systems(path: Path, pairs: dict[str, np.ndarray], attention: str = "einsum", shared: bool = True
                ) -> dict:
  from safetensors.numpy import load_file

  cfg = _hf_mapping.config_from_hf(json.loads((path / "config.json").read_text()), attention=attention)
  model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  _hf_mapping.load_hf_weights(model, load_file(path / "model.safetensors"))
  graphdef, params = nnx.split(model)
  ref_params = jax.tree.map(jnp.copy, params)
  tx = optax.adamw(LR)
  objective = po.preference_objective("dpo", beta=BETA)
  step = jax.jit(make_train_step(objective, tx, graphdef), donate_argnums=(0,))
  ref_fn = jax.jit(lambda p, b: po.reference_logps(nnx.merge(graphdef, p), b))
  rows = shared_rows(pair_rows(pairs)) if shared else pair_rows(pairs)
  fixed = {**rows, po.REF_LOGPS: ref_fn(ref_params, rows)}
  states = {"ours": create_train_state(params, tx, 0),
            "ours_with_ref": create_train_state(jax.tree.map(jnp.copy, params), tx, 0),
            "ours_ref_in_step": create_train_state(jax.tree.map(jnp.copy, params), tx, 0)}
  plain_step = make_train_step(objective, tx, graphdef)

  def with_ref(state, ref, b):
    return plain_step(state, {**b, po.REF_LOGPS: po.reference_logps(nnx.merge(graphdef, ref), b)})

  ref_in_step = jax.jit(with_ref, donate_argnums=(0,))

  def ours():
    states["ours"], m = step(states["ours"], fixed)
    return jax.block_until_ready(m)

  def ours_with_ref():
    batch = {**rows, po.REF_LOGPS: ref_fn(ref_params, rows)}
    states["ours_with_ref"], m = step(states["ours_with_ref"], batch)
    return jax.block_until_ready(m)

  def ours_ref_in_step():
    states["ours_ref_in_step"], m = ref_in_step(states["ours_ref_in_step"], ref_params, rows)
    return jax.block_until_ready(m)

  systems = {"ours_with_ref": ours_with_ref, "ours_ref_in_step": ours_ref_in_step, "ours": ours}
  return systems, float(ours()["loss"])


def trl_system(path: Path, pairs: dict[str, np.ndarray]):
  """TRL's DPO step on the same token ids (its collator gets pre-tokenised examples)."""
  import torch
  from datasets import Dataset
  from tokenizers import Tokenizer, models, pre_tokenizers
  from transformers import LlamaForCausalLM, PreTrainedTokenizerFast
  from trl import DPOConfig, DPOTrainer

  words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(512)}, unk_token="t0"))
  words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # only for the one-row dataset TRL insists on
  tok = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="t0", bos_token="t1", eos_token="t2")
  policy = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
  reference = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
  out = tempfile.mkdtemp()
  args = DPOConfig(output_dir=out, per_device_train_batch_size=len(pairs["prompt"]), beta=BETA,
                   loss_type=["sigmoid"], learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.01,
                   max_grad_norm=None, use_cpu=True, bf16=False, fp16=False,
                   report_to="none", save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
                   max_length=None, seed=0)
  data = Dataset.from_dict({"prompt": ["t5 "], "chosen": ["t6 "], "rejected": ["t7 "]})
  trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=data, processing_class=tok)
  trainer.create_optimizer_and_scheduler(num_training_steps=10**6)
  trainer.current_gradient_accumulation_steps = 1  # what its train loop sets before each step
  examples = [{"prompt_ids": p.tolist(), "chosen_ids": c.tolist(), "rejected_ids": r.tolist()}
              for p, c, r in zip(pairs["prompt"], pairs["chosen"], pairs["rejected"])]
  batch = trainer.data_collator(examples)

  def call():
    loss = trainer.training_step(trainer.model, batch)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return float(loss)

  return call, call()


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--pairs", type=int, default=8)
  p.add_argument("--prompt", type=int, default=32)
  p.add_argument("--completion", type=int, default=64)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--attentions", default="einsum,blocked")
  p.add_argument("--no-tunix", action="store_true")
  add_tunix_flag(p)
  args = p.parse_args()

  load0 = os.getloadavg()[0]
  pairs = make_pairs(args.pairs, args.prompt, args.completion, 512)
  peer, tunix = (None, "unavailable (--no-tunix)") if args.no_tunix else start_tunix(args.tunix_python)
  result: dict = {"benchmark": "preference_step", "pairs": args.pairs, "prompt": args.prompt,
                  "attentions": args.attentions,
                  "completion": args.completion, "repeats": args.repeats, "tunix": tunix}
  with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp)
    write_checkpoint(path)
    attentions = args.attentions.split(",")
    systems, result["ours_first_loss"] = jax_systems(path, pairs, attentions[0])
    for attention in attentions[1:]:
      other, result[f"ours_first_loss_{attention}"] = jax_systems(path, pairs, attention)
      systems[f"ours_with_ref@{attention}"] = other["ours_with_ref"]
    rows_systems, result["ours_first_loss_rows"] = jax_systems(path, pairs, attentions[0], shared=False)
    systems["ours_with_ref@rows"] = rows_systems["ours_with_ref"]
    n, prompt, completion = args.pairs, args.prompt, args.completion
    result["forward_tokens"] = {"rows": 2 * n * (prompt + completion - 1),
                                "shared_prompt": n * prompt + 2 * n * (completion - 1)}
    try:
      systems["trl"], result["trl_first_loss"] = trl_system(path, pairs)
      import trl

      result["trl"] = f"trl {trl.__version__}"
    except ImportError as e:
      result["trl"] = f"unavailable ({e})"
    if peer is not None:
      mask = lambda a: np.ones(a.shape, bool).tolist()
      info = peer.setup("dpo", ckpt=str(path), beta=BETA, lr=LR, prompt_ids=pairs["prompt"].tolist(),
                        prompt_mask=mask(pairs["prompt"]), chosen_ids=pairs["chosen"].tolist(),
                        chosen_mask=mask(pairs["chosen"]), rejected_ids=pairs["rejected"].tolist(),
                        rejected_mask=mask(pairs["rejected"]))
      result["tunix_first_loss"] = info["loss"]
      systems["tunix"] = peer.run
    times = interleaved_times(systems, args.repeats)
    if peer is not None:
      peer.close()
  med = {name: statistics.median(t) for name, t in times.items()}
  for name, t in times.items():
    result[f"{name}_s"] = spread(t)
    print(f"{name:>22}: {med[name] * 1e3:7.0f} ms / step (min {min(t) * 1e3:.0f}, max {max(t) * 1e3:.0f})")
  for peer_name in ("trl", "tunix"):
    if peer_name in med:
      result[f"speedup_vs_{peer_name}"] = med[peer_name] / med["ours_with_ref"]
      result[f"speedup_vs_{peer_name}_ref_precomputed"] = med[peer_name] / med["ours"]
      result[f"speedup_vs_{peer_name}_ref_in_step"] = med[peer_name] / med["ours_ref_in_step"]
      for attention in attentions[1:]:
        result[f"speedup_vs_{peer_name}_{attention}"] = med[peer_name] / med[f"ours_with_ref@{attention}"]
      result[f"speedup_vs_{peer_name}_rows"] = med[peer_name] / med["ours_with_ref@rows"]
  result["rows_over_shared"] = med["ours_with_ref@rows"] / med["ours_with_ref"]
  result.update(load_record(load0, cores()))
  print(json.dumps(result))


if __name__ == "__main__":
  main()
