"""A process reward model from Monte Carlo step labels, used to rerank the policy's solutions.

COMMAND:
  python -m w2s_jax.main --config=configs/prm_tiny.py:smoke --workdir=/tmp/prm_tiny          # ~1 min
  python -m w2s_jax.main --config=configs/prm_tiny.py --workdir=runs/prm_tiny                # README run
  (--config.label.method=mc_soft | omega for the other labellers)

The tiny byte-level decoder is SFT'd on reasoning-gym `gcd` worked solutions (Euclid's algorithm, one
division per line; the SFT settings equal `configs/grpo_gain.py`'s, so `--config.sft.workdir=` can share
that run's SFT model), samples solutions to train problems, labels every step by Monte Carlo completions
(`label`), trains a PRM (`ValueModel` on the SFT backbone, BCE at step-end tokens; `total_steps` PRM
updates) and reranks `eval.samples` solutions per held-out problem: PRM best-of-N vs PRM-weighted vote vs
majority vote vs a random pick. Pipeline: `w2s_jax/prm/pipeline.py`; output WORKDIR/results.json.
Arg `smoke`: `chain_sum`, a 60-step SFT, 6 problems × 4 solutions × 4 completions per step, 20 PRM steps.
"""

import ml_collections

from w2s_jax.config_files import load_common, load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  base = load_config("rl_base", arg)  # raises on an unknown arg; its model, data and sft sections are shared
  c = ml_collections.ConfigDict()
  c.task = "prm_pipeline"
  load_common().loop(c, total_steps=20 if smoke else 400,  # PRM updates
                     checkpoint_every_steps=20 if smoke else 200, keep_checkpoints=1)
  c.model, c.data, c.sft = base.model, base.data, base.sft

  c.data.task = "chain_sum" if smoke else "gcd"  # a key of w2s_jax.data.reasoning.TASKS
  c.data.max_prompt_len = 128 if smoke else 136  # prompt slots P (gcd prompts are 128–129 tokens)

  # Phase 1: SFT of the policy (w2s_jax.rl.sft_init): rl_base's, longer sequences and 600 steps for gcd.
  c.sft.total_steps = 60 if smoke else 600
  c.sft.seq_len = 256 if smoke else 320

  # How the policy samples solutions and MC completions (rl_base's group and tree keys are RL-only).
  c.rollout = ml_collections.ConfigDict({k: base.rollout[k] for k in ("temperature", "top_p")})
  c.rollout.max_new_tokens = 64 if smoke else 200  # N (99 % of gcd worked solutions fit in 196 tokens)

  # Phase 2: Monte Carlo step labels (w2s_jax.prm.labels).
  c.label = ml_collections.ConfigDict()
  c.label.method = "mc_hard"  # mc_hard | mc_soft (Math-Shepherd) | omega (binary search for the first error)
  c.label.problems = 6 if smoke else 96  # train problems whose solutions are labelled
  c.label.solutions_per_problem = 4 if smoke else 4
  c.label.rollouts_per_step = 4  # K completions per step prefix (Math-Shepherd: 8; 4 fits a CPU budget)
  c.label.boundary = "\n"  # the token that ends a step
  c.label.chunk_rows = 64 if smoke else 128  # sampler rows per call
  c.label.eval_frac = 0.17 if smoke else 0.125  # share of labelled problems held out for the PRM's eval

  # Phase 3: PRM training (the `prm` objective through train.loop.train, in WORKDIR/prm).
  c.prm = ml_collections.ConfigDict()
  c.prm.batch_size = 8 if smoke else 16
  c.prm.optimizer = load_common().optimizer(1e-3, warmup_steps=2 if smoke else 20)
  c.prm.log_every_steps = 5 if smoke else 20

  # Phase 4: reranking on held-out problems.
  c.eval = ml_collections.ConfigDict()
  c.eval.samples = 4 if smoke else 8  # N candidates per problem
  c.eval.chunk_rows = c.label.chunk_rows  # the same sampler shape as labelling: one compilation
  return c
