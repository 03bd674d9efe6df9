"""Shared base of the RL configs (`grpo_tiny`, `rloo_tiny`, `ppo_tiny`, `dapo_tiny`, `topr_tiny`, `rft_tiny`,
`tempo_tiny`, `treerl_tiny`, `vineppo_tiny`).

COMMAND (through a variant):
  python -m w2s_jax.main --config=configs/grpo_tiny.py:smoke --workdir=/tmp/grpo_tiny
The run first SFTs the tiny byte-level decoder on `chain_sum` worked solutions (`sft` section, in
WORKDIR/sft, or a shared `sft.workdir`), then runs RL with verifiable rewards from the reasoning-gym
scorer. `total_steps` counts RL iterations (rollout + `train.epochs` passes of minibatch updates).
Arg `smoke`: a 60-step SFT and 3 RL iterations of 4 prompts × 4 samples, seconds on CPU.
"""

import ml_collections

from w2s_jax.config_files import load_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  common = load_common()
  c = ml_collections.ConfigDict()
  c.task = "rl"
  common.loop(c, total_steps=3 if smoke else 200,  # RL iterations
              checkpoint_every_steps=2 if smoke else 25, keep_checkpoints=2)
  c.sample_budget = 0  # stop early once this many tokens were sampled (all rollouts counted); 0 = off
  c.rl_seed = -1  # >= 0: seeds the RL draws, prompt order and minibatches instead of `seed` (same SFT model)

  c.model = common.model("tiny", max_seq_len=512)

  c.data = ml_collections.ConfigDict()
  # Any task spec (w2s_jax.data.task_registry): a reasoning-gym dataset name (chain_sum, countdown, …), a
  # .jsonl/.parquet file of prompt/answer records, or "module:function".
  c.data.task = "chain_sum"
  c.data.task_options = ""  # the task's options: a dict in a config file, or a JSON object string on the CLI
  c.data.answer_format = ""  # answer_line (default) | answer_tag | boxed | last_number | any | mod:fn
  c.data.tokenizer = "bytes"  # or gguf:smollm2-135m, a .model / tokenizer.json path
  c.data.chat_template = ""  # "tokenizer" (its own, e.g. SmolLM2's), a CHAT_TEMPLATES key or Jinja; "" = off
  c.data.train_size = 2000 if smoke else 20000
  c.data.eval_size = 8 if smoke else 128  # held-out problems
  c.data.seed = 0
  c.data.max_prompt_len = 128  # prompt slots P (BOS + "Question: …\nSolution:\n")
  c.data.long_prompts = "error"  # a prompt over max_prompt_len: "error" (names the length to set) or "skip"

  # Phase 1: SFT on worked solutions through the SFT loop (reloaded when already done).
  # `sft.workdir`: "" = WORKDIR/sft; a path shares one SFT model between runs (same settings!)
  c.sft = common.sft_phase(total_steps=60 if smoke else 1500, batch_size=8 if smoke else 16, seq_len=256,
                           lr=3e-3, warmup_steps=10 if smoke else 100)

  c.rollout = ml_collections.ConfigDict()
  c.rollout.prompts_per_step = 4 if smoke else 16  # B
  c.rollout.group_size = 4 if smoke else 8  # G
  c.rollout.max_new_tokens = 64 if smoke else 112  # N (= DAPO's L_max)
  c.rollout.temperature = 1.0
  c.rollout.top_p = 0.0  # 0 = off
  # Rollouts drop finished rows, shrinking the batch B·G, B·G/2, ... down to this size; each size compiles
  # its own decode loop (the same tokens whatever the sizes).
  c.rollout.compact_min_rows = 2
  c.rollout.old_logprobs = "sampler"  # or "recompute" (a forward pass with the pre-update params)
  c.rollout.kind = "group"  # or "tree": TreeRL's entropy-forked trees, rows = leaves (advantage 'treerl')
  c.rollout.tree = ml_collections.ConfigDict()  # EPTree (kind "tree"): G >= n_roots + n_iters·top_n·n_forks
  c.rollout.tree.n_roots = 4  # M chains per prompt
  c.rollout.tree.n_iters = 1  # L forking rounds
  c.rollout.tree.top_n = 2  # N highest −log p tokens forked per tree and round
  c.rollout.tree.n_forks = 2  # T children per forked token

  c.reward = ml_collections.ConfigDict()
  c.reward.correct_coef = 1.0
  c.reward.format_coef = 0.0
  c.reward.overlong_buffer = 0  # DAPO L_cache; 0 = off
  c.reward.overlong_penalty = 1.0
  c.reward.partial_coef = 0.0  # weight of the scorer's partial credit (clipped to [0, 1]); 0 = off
  c.reward.length_coef = 0.0  # weight of −length / max_new_tokens; 0 = off
  c.reward.custom = ""  # "module:function": fn(problem, completion, answer) -> float; "" = off
  c.reward.custom_coef = 1.0
  c.reward.learned_coef = 0.0  # weight of a learned reward passed as train_rl(reward_fn=...); 0 = off
  # Learned terms from earlier runs' folders (w2s_jax.rewards.learned), each logged as reward_<name>:
  c.reward.model_workdir = ""  # a reward-model run (configs/reward_model_tiny.py): term `model`; "" = off
  c.reward.model_coef = 1.0
  c.reward.prm_workdir = ""  # a PRM run (configs/prm_tiny.py): term `prm`, its solution score; "" = off
  c.reward.prm_coef = 1.0
  c.reward.prm_reduce = "min"  # step probabilities -> solution score: min | last | prod | mean
  c.reward.process = ""  # "pav" (PRM run as the prover) | "implicit_prm" (a DPO-family run); "" = off
  c.reward.process_workdir = ""  # the run behind reward.process
  c.reward.process_coef = 1.0  # weight of the process term (PAV's alpha), summed over the steps
  c.reward.implicit_prm_beta = 0.0  # 0 = the DPO run's loss.beta
  c.reward.process_boundary = "\n"  # implicit_prm: text that ends a step (PAV uses the PRM's label.boundary)

  c.dynamic_sampling = ml_collections.ConfigDict()
  c.dynamic_sampling.enabled = False
  c.dynamic_sampling.max_rounds = 3  # rollouts per iteration at most; a short batch is padded (masked)
  c.dynamic_sampling.metric = "correct"  # or "reward": what must vary within a group

  c.advantage = ml_collections.ConfigDict()
  c.advantage.name = "grpo"  # see w2s_jax.advantages.ADVANTAGES
  c.advantage.eps = 1e-6
  c.advantage.gamma = 1.0
  c.advantage.lam = 0.95
  c.advantage.whiten = True  # gae
  c.advantage.positive_weight = 0.1  # w_reinforce λ
  c.advantage.negative_weight = 1.0
  c.advantage.td_weight = 1.0  # tempo: coefficient of the branch TD terms
  c.advantage.root_td = False  # tempo: also a TD term at the root branch (see tempo_advantages)
  c.advantage.tree_weighting = "sqrt"  # treerl: 1/sqrt(|L(s)|) down-weighting, or "none"
  c.advantage.tree_leaf_baseline = "none"  # treerl: "loo" = THUDM/TreeRL's leaf_normalize
  c.advantage.global_weight = 1.0  # treerl: V(s) − V(root)
  c.advantage.local_weight = 1.0  # treerl: V(s) − V(parent)
  c.advantage.mc_rollouts = 4  # vineppo: K rollouts per step boundary (paper: 9)
  c.advantage.mc_max_steps = 8  # vineppo: steps with a Monte Carlo value (later ones filled from the end)
  c.advantage.step_boundary = "\n"  # vineppo: text whose tokens end a step
  c.advantage.unlikeliness_rank_penalty = 0.0  # β_rank, "Rewarding the Unlikely" (paper: 0.25); 0 = off

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "ppo"  # w2s_jax.losses.POLICY_LOSSES: ppo | dapo | gspo | cispo | topr | reinforce
  c.loss.reduction = "seq-mean-token-mean"
  c.loss.clip_eps = 0.0  # 0 = the kind's default
  c.loss.clip_eps_high = 0.0
  c.loss.dual_clip_c = 0.0  # 0 = off
  c.loss.topr_level = "sequence"
  c.loss.use_is_ratio = False
  c.loss.positive_weight = 1.0
  c.loss.negative_weight = 1.0
  c.loss.value_coef = 0.5  # PPO critic (advantage 'gae' only)
  c.loss.value_clip = 0.2

  c.kl = ml_collections.ConfigDict()
  c.kl.coef = 0.0
  c.kl.kind = "k3"
  c.kl.where = "loss"  # or "reward"

  c.rft = ml_collections.ConfigDict()
  c.rft.threshold = 1.0

  c.shared_prompt = True  # run each group's prompt once in the log-prob passes and updates (exact)
  c.train = ml_collections.ConfigDict()
  c.train.epochs = 1
  c.train.minibatch_size = 8 if smoke else 64  # rows per update
  c.train.group_minibatches = False  # True: minibatches of whole groups, so every update shares prompts

  c.eval = ml_collections.ConfigDict()
  c.eval.samples = 4 if smoke else 16  # n per held-out problem (0 = no evaluation)
  c.eval.ks = [1, 2, 4] if smoke else [1, 2, 4, 8, 16]
  c.eval_every_steps = 3 if smoke else 25  # 0 = only before RL and after the last iteration

  c.optimizer = common.optimizer(1e-4, schedule="constant", warmup_steps=0, end_lr_frac=1.0, weight_decay=0.0,
                                 b2=0.999)
  return c
