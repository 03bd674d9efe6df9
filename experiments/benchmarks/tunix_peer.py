"""Tunix (google-tunix 0.1.7) as a benchmark peer, run in Tunix's own virtualenv by `_bench.TunixPeer`.

Protocol: one JSON object a line on stdin, one reply a line on stdout (other output goes to stderr):
  {"op": "version"}                         -> {"version": "0.1.7"}
  {"op": "setup", "task": T, "args": {...}} -> builds task T on the HF Llama checkpoint in args["ckpt"],
                                               runs it once (compile) and replies with what it returned
  {"op": "run"}                             -> {"s": seconds of one call of the set-up task}

Tasks (all on the one CPU device, under `tunix.utils.mesh.create_mesh` with Auto axes):
  sampler: `tunix.generate.sampler.Sampler`, greedy, prompts given as token ids (a tokenizer that maps
           space-separated ids to ids), no stop token, `new` tokens a row; setup returns the tokens.
  sft:     `PeftTrainer` (full fine-tune, AdamW) one jitted train step on `tokens` (all real).
  dpo:     `DPOTrainer` one step on pre-tokenised pairs, frozen reference = a second copy of the
           checkpoint; the step is `_prepare_inputs` (reference log-probs) + the jitted update, as in
           its `train()`.
  grpo:    `GRPOLearner` over `RLCluster` (rollout engine "vanilla"), one `learner.train` call on the
           next batch of text prompts per run (see `setup_grpo`).
  logits:  the model's logits on one sequence of ids (a check that Tunix reads the checkpoint as the
           other systems do); setup returns the last position's logits and every position's argmax.
This file imports only Tunix's environment (not w2s_jax).

RoPE base: Tunix 0.1.7's Llama3 attention calls `apply_rope` without the config's `rope_theta`, so it
always rotates with base 1e6 and computes another network than the checkpoint's whenever its base differs
(perf-4m: 1e4; SmolLM2: 1e5). `_model` rebinds the module's `apply_rope` to the checkpoint's base (the same
operations, so Tunix's cost is unchanged); the `logits` task checks the result against the other systems.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from importlib import metadata


def _log(*a) -> None:
  print(*a, file=sys.stderr, flush=True)


def _config(ckpt: str):
  from tunix.models.llama3 import model as llama

  hf = json.loads(open(f"{ckpt}/config.json").read())
  return llama.ModelConfig(
    num_layers=hf["num_hidden_layers"], vocab_size=hf["vocab_size"], embed_dim=hf["hidden_size"],
    hidden_dim=hf["intermediate_size"], num_heads=hf["num_attention_heads"],
    head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
    num_kv_heads=hf["num_key_value_heads"],
    rope_theta=float(hf.get("rope_theta") or hf.get("rope_parameters", {}).get("rope_theta", 1e6)),
    norm_eps=hf["rms_norm_eps"], weight_tying=hf.get("tie_word_embeddings", False),
  )


def _model(ckpt: str, mesh):
  import functools

  from tunix.models.llama3 import model as llama
  from tunix.models.llama3 import params

  config = _config(ckpt)
  rope = getattr(llama.apply_rope, "func", llama.apply_rope)  # the original, also after an earlier rebind
  llama.apply_rope = functools.partial(rope, rope_theta=config.rope_theta)  # see the module docstring
  return params.create_model_from_safe_tensors(ckpt, config, mesh=mesh)


class IdTokenizer:
  """Strings of space-separated token ids <-> ids; no BOS (bos_id 0 is falsy), pad 0, no EOS."""

  def encode(self, text: str, **_) -> list[int]:
    return [int(t) for t in text.split()]

  def decode(self, ids, **_) -> str:
    return " ".join(str(int(i)) for i in ids)

  def bos_id(self) -> int:
    return 0

  def eos_id(self) -> int:
    return -1

  def pad_id(self) -> int:
    return 0


def setup_sampler(a: dict, mesh):
  import jax
  import numpy as np
  from tunix.generate import sampler as sampler_lib

  model = _model(a["ckpt"], mesh)
  cfg = model.config
  prompts = [" ".join(map(str, row)) for row in a["prompts"]]
  p, new = len(a["prompts"][0]), a["new"]
  cache = sampler_lib.CacheConfig(cache_size=p + new, num_layers=cfg.num_layers,
                                  num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim)
  sampler = sampler_lib.Sampler(model, IdTokenizer(), cache)

  def call():
    out = sampler(prompts, max_generation_steps=new, max_prompt_length=p, temperature=0.0,
                  eos_tokens=[-1], echo=False)
    jax.block_until_ready(out.tokens)
    return out

  out = call()
  return call, {"tokens": [np.asarray(t).tolist() for t in out.tokens]}


def setup_sft(a: dict, mesh):
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from tunix.sft import peft_trainer, utils

  model = _model(a["ckpt"], mesh)
  trainer = peft_trainer.PeftTrainer(model, optax.adamw(a.get("lr", 1e-4)),
                                     peft_trainer.TrainingConfig(eval_every_n_steps=10**9, max_steps=10**9))

  def to_model_input(x):
    return {"input_tokens": x.input_tokens, "input_mask": x.input_mask,
            "positions": utils.build_positions_from_mask(x.input_mask),
            "attention_mask": utils.make_causal_attn_mask(x.input_mask)}

  trainer.with_gen_model_input_fn(to_model_input)
  step, _ = trainer.jit_train_and_eval_step()
  tokens = jnp.asarray(np.asarray(a["tokens"], np.int32))
  batch = peft_trainer.TrainingInput(input_tokens=tokens, input_mask=jnp.ones(tokens.shape, bool))

  def call():
    loss, _, _ = step(batch)
    return jax.block_until_ready(loss)

  return call, {"loss": float(call())}


def setup_dpo(a: dict, mesh):
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from tunix.sft.dpo import dpo_trainer

  policy, reference = _model(a["ckpt"], mesh), _model(a["ckpt"], mesh)
  config = dpo_trainer.DPOTrainingConfig(eval_every_n_steps=10**9, max_steps=10**9, beta=a.get("beta", 0.1))
  trainer = dpo_trainer.DPOTrainer(policy, reference, optax.adamw(a.get("lr", 1e-6)), config)
  step, _ = trainer.jit_train_and_eval_step()
  arr = lambda k, dt=np.int32: jnp.asarray(np.asarray(a[k], dt))
  batch = dpo_trainer.TrainingInput(
    prompt_ids=arr("prompt_ids"), prompt_mask=arr("prompt_mask", bool), chosen_ids=arr("chosen_ids"),
    chosen_mask=arr("chosen_mask", bool), rejected_ids=arr("rejected_ids"),
    rejected_mask=arr("rejected_mask", bool))

  def call():
    loss, _, _ = step(trainer._prepare_inputs(batch))
    return jax.block_until_ready(loss)

  return call, {"loss": float(call())}


class ByteTokenizer:
  """w2s_jax's ByteTokenizer ids (0/1/2 = pad/BOS/EOS, byte b = b + 3), for text prompts (GRPO)."""

  def encode(self, text: str, **_) -> list[int]:
    return [b + 3 for b in text.encode()]

  def decode(self, ids, **_) -> str:
    return bytes(int(i) - 3 for i in ids if 3 <= int(i) < 259).decode(errors="replace")

  def bos_id(self) -> int:
    return 1

  def eos_id(self) -> int:
    return 2

  def pad_id(self) -> int:
    return 0


class JsonTokenizer:
  """A HF `tokenizer.json` (the `tokenizers` package) with given BOS/EOS/pad ids; Tunix's sampler adds BOS."""

  def __init__(self, path: str, bos: int, eos: int, pad: int):
    from tokenizers import Tokenizer

    self.tok, self._ids = Tokenizer.from_file(path), (bos, eos, pad)

  def encode(self, text: str, **_) -> list[int]:
    return self.tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids, **_) -> str:
    return self.tok.decode([int(i) for i in ids])

  def bos_id(self) -> int:
    return self._ids[0]

  def eos_id(self) -> int:
    return self._ids[1]

  def pad_id(self) -> int:
    return self._ids[2]


def _tokenizer(a: dict):
  """ByteTokenizer, or the checkpoint's tokenizer.json when `a["tokenizer"] == "json"`."""
  if a.get("tokenizer", "bytes") == "bytes":
    return ByteTokenizer()
  hf = json.loads(open(f"{a['ckpt']}/config.json").read())
  return JsonTokenizer(f"{a['ckpt']}/tokenizer.json", hf["bos_token_id"], hf["eos_token_id"],
                       hf["pad_token_id"])


def setup_logits(a: dict, mesh):
  import numpy as np
  from tunix.sft import utils

  model = _model(a["ckpt"], mesh)
  ids = np.asarray([a["ids"]], np.int32)
  mask = np.ones(ids.shape, bool)
  logits, _ = model(ids, utils.build_positions_from_mask(mask), None, utils.make_causal_attn_mask(mask))
  out = np.asarray(logits[0], np.float32)
  return (lambda: None), {"last": out[-1].tolist(), "argmax": out.argmax(-1).tolist()}


def setup_grpo(a: dict, mesh):
  """`GRPOLearner` over `RLCluster` (rollout engine "vanilla"); run i = `learner.train` on batch i of
  `batches` (lists of B prompt texts; `answers` alike), G samples each, at most `new` tokens, no KL,
  one update per rollout; the reward is 1 when the answer string is in the completion. The tokenizer is
  `ByteTokenizer` or (`tokenizer="json"`) the checkpoint's own; `eos` is the stop id."""
  import numpy as np
  import optax
  from tunix.rl import rl_cluster as rl
  from tunix.rl.grpo import grpo_learner
  from tunix.rl.rollout import base_rollout

  actor = _model(a["ckpt"], mesh)
  G, N = a["group"], a["new"]
  tokenizer = _tokenizer(a)
  prompt_len = max(len(tokenizer.encode(p)) + 1 for batch in a["batches"] for p in batch)
  config = rl.ClusterConfig(
    role_to_mesh={rl.Role.ACTOR: mesh, rl.Role.REFERENCE: mesh, rl.Role.ROLLOUT: mesh},
    rollout_engine="vanilla", offload_to_cpu=False,
    training_config=rl.RLTrainingConfig(actor_optimizer=optax.adamw(a.get("lr", 1e-4)),
                                        eval_every_n_steps=10**9, max_steps=10**9),
    rollout_config=base_rollout.RolloutConfig(max_tokens_to_generate=N, max_prompt_length=prompt_len,
                                              kv_cache_size=prompt_len + N + 8, temperature=1.0, top_p=1.0,
                                              eos_tokens=[a.get("eos", 2)]),
  )
  cluster = rl.RLCluster(actor=actor, reference=actor, tokenizer=tokenizer, cluster_config=config)

  def reward(prompts, completions, answer, **_):
    return [float(str(x) in c) for c, x in zip(completions, answer)]

  learner = grpo_learner.GRPOLearner(cluster, grpo_learner.GRPOConfig(num_generations=G, beta=0.0),
                                     reward_fns=reward)
  batches = [{"prompts": np.array(p), "answer": np.array(x)} for p, x in zip(a["batches"], a["answers"])]
  done = []

  def call():
    learner.train([batches[len(done) % len(batches)]])
    done.append(1)

  call()
  return call, {"iterations": len(done)}


TASKS = {"sampler": setup_sampler, "sft": setup_sft, "dpo": setup_dpo, "grpo": setup_grpo,
         "logits": setup_logits}


def main() -> None:
  from tunix.utils import mesh as mesh_lib

  warnings.filterwarnings("ignore", category=DeprecationWarning)  # `with mesh:`, which PeftTrainer reads
  mesh = mesh_lib.create_mesh((1, 1), ("fsdp", "tp"))
  call = None
  for line in sys.stdin:
    req = json.loads(line)
    try:
      if req["op"] == "version":
        reply = {"version": metadata.version("google-tunix")}
      elif req["op"] == "setup":
        t = time.perf_counter()
        with mesh:
          call, reply = TASKS[req["task"]](req["args"], mesh)
        reply["setup_s"] = time.perf_counter() - t
      elif req["op"] == "run":
        t = time.perf_counter()
        with mesh:
          call()
        reply = {"s": time.perf_counter() - t}
      else:
        reply = {"error": f"unknown op {req['op']!r}"}
    except Exception as e:  # the benchmark reports it; the peer keeps serving
      _log(f"tunix_peer: {type(e).__name__}: {e}")
      reply = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(reply), flush=True)


if __name__ == "__main__":
  main()
