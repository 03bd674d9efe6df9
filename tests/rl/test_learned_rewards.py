"""Learned reward terms chosen in the config (`reward.model_workdir`, `reward.prm_workdir`, `reward.process`):
their values against the trained models' own forward passes, the process terms against the pure functions
of `w2s_jax.advantages.process`, the errors that name the key, and an RL run through `main` with them.

The runs behind the terms (a reward model, a PRM pipeline, a DPO model) are their smoke configs, shortened
to a few steps: the tests check the wiring, not the models' quality.
"""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from tests.helpers import load_config, run_main
from w2s_jax.advantages.process import implicit_prm_step_rewards, pav_progress, prm_solution_scores
from w2s_jax.data import reasoning
from w2s_jax.data.sft_sources import reasoning_problems, reasoning_prompt
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.models.heads import SequenceClassifier, ValueModel
from w2s_jax.models.presets import get_preset
from w2s_jax.models.transformer import Transformer
from w2s_jax.rewards.compose import reward_terms
from w2s_jax.rewards.learned import make_reward_config

TOK = ByteTokenizer()
PAIRS = ["--config.total_steps=4", "--config.eval_every_steps=4", "--config.checkpoint_every_steps=2",
         "--config.data.train_size=32", "--config.data.eval_size=16"]
SHORT = {  # a few steps each: enough for a checkpoint, not for a good model
  "reward_model_tiny": PAIRS,
  "dpo_tiny": PAIRS,
  "prm_tiny": ["--config.label.problems=4",
               "--config.label.solutions_per_problem=2",
               "--config.label.rollouts_per_step=2", "--config.total_steps=2",
               "--config.checkpoint_every_steps=2", "--config.prm.batch_size=2", "--config.eval.samples=2",
               "--config.data.eval_size=2"],
}
# Completions of two chain_sum problems: a two-step answer that stopped, a one-step one cut off, none at all.
TEXTS = ["3 + 4 = 7\n7 + 1 = 8\nAnswer: 8", "Answer: 12\n", ""]
STOPPED = np.array([True, False, False])


def _main(args, env):
  out = run_main(args, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, rl_smoke_sft):
  """Folders of a reward-model, a PRM-pipeline and a DPO run (short smoke runs through main); the PRM
  pipeline starts from the RL smoke configs' SFT model (tests/conftest.py, one device)."""
  root = tmp_path_factory.mktemp("learned_runs")
  env = {"W2S_JAX_CACHE": str(root / "cache")}
  out = {}
  shared_sft = {"prm_tiny": [f"--config.sft.workdir={rl_smoke_sft}", "--config.mesh.data=1"]}
  for name, config in (("rm", "reward_model_tiny"), ("prm", "prm_tiny"), ("dpo", "dpo_tiny")):
    _main([f"--config=configs/{config}.py:smoke", f"--workdir={root / name}", *SHORT[config],
           *shared_sft.get(config, [])], env)
    out[name] = root / name
  out["env"] = env
  out["sft"] = rl_smoke_sft
  return out


@pytest.fixture(scope="module")
def problems():
  ps = reasoning_problems("chain_sum", "train", size=2, seed=0)
  return [ps[0], ps[1], ps[0]]


def _raw_params(folder, model):
  """The model with the params of the newest step folder under `folder/checkpoints`, read by Orbax alone."""
  step = max(int(p.name) for p in (folder / "checkpoints").iterdir() if p.name.isdigit())
  raw = ocp.StandardCheckpointer().restore(folder / "checkpoints" / str(step) / "state")["params"]
  fill = lambda node, stored: {k: fill(v, stored[str(k)]) if isinstance(v, dict) else jnp.asarray(
    stored[str(k)]["value"]) for k, v in node.items()}
  graphdef, state = nnx.split(model)
  nnx.replace_by_pure_dict(state, fill(nnx.to_pure_dict(state), raw))
  return nnx.merge(graphdef, state)


def _ids(problem, text, stopped):
  prompt = [TOK.bos_id, *TOK.encode(reasoning_prompt(problem))]
  return prompt, TOK.encode(text) + ([TOK.eos_id] if stopped else [])


def _terms(problems, cfg):
  grades = [reasoning.grade(p, t) for p, t in zip(problems, TEXTS)]
  return reward_terms(problems, TEXTS, grades, STOPPED, np.array([len(t) for t in TEXTS]), 64, cfg)


def _config(folder):
  return json.loads((folder / "config.json").read_text())


@pytest.mark.slow
def test_reward_model_term_is_the_models_score(runs, problems):
  cfg = make_reward_config({"correct_coef": 1.0, "model_workdir": str(runs["rm"]), "model_coef": 0.5})
  terms = _terms(problems, cfg)
  m = _config(runs["rm"])["model"]
  model = _raw_params(runs["rm"], SequenceClassifier(get_preset("tiny", vocab_size=m["vocab_size"],
                                                                **m["overrides"]), 1, rngs=nnx.Rngs(0)))
  score = nnx.jit(lambda m, ids: m(ids, segment_ids_BL=jnp.ones_like(ids)))  # one program a row length
  want = []
  for p, t in zip(problems, TEXTS):
    prompt, completion = _ids(p, t, False)  # the reward model's rows end at the completion's last token
    want.append(float(score(model, jnp.asarray([prompt + completion]))[0, 0]))  # one unpadded row at a time
  np.testing.assert_allclose(terms["model"], 0.5 * np.asarray(want), rtol=1e-4, atol=1e-6)
  assert set(terms) == {"correct", "model"}
  assert np.ptp(want) > 0  # the rows are told apart: the score is not a constant head bias


@pytest.mark.slow
def test_prm_and_pav_terms_are_the_pure_functions_of_the_prms_probabilities(runs, problems):
  cfg = make_reward_config({"correct_coef": 0.0, "prm_workdir": str(runs["prm"]), "prm_coef": 2.0,
                            "prm_reduce": "min", "process": "pav", "process_workdir": str(runs["prm"]),
                            "process_coef": 0.5})
  terms = _terms(problems, cfg)
  m = _config(runs["prm"])["model"]
  model = _raw_params(runs["prm"] / "prm", ValueModel(get_preset("tiny", vocab_size=m["vocab_size"],
                                                                  **m["overrides"]), rngs=nnx.Rngs(0)))
  # Step ends by hand (bytes: one token a character): each "\n", then the stop token or the last token.
  ends = [[9, 19, len(TEXTS[0])], [10], []]
  probs_fn = nnx.jit(lambda m, ids: jax.nn.sigmoid(m(ids)))  # one program a row length (not op by op)
  values_T, masks = np.zeros((3, 4), np.float32), np.zeros((3, 3), bool)
  for r, (p, t, s) in enumerate(zip(problems, TEXTS, STOPPED)):
    prompt, completion = _ids(p, t, s)
    probs = np.asarray(probs_fn(model, jnp.asarray([prompt + completion])))[0]
    values_T[r, :len(ends[r]) + 1] = [probs[len(prompt) - 1], *(probs[len(prompt) + e] for e in ends[r])]
    masks[r, :len(ends[r])] = True
  want_prm = prm_solution_scores(jnp.asarray(values_T[:, 1:]), jnp.asarray(masks), reduce="min")
  want_pav = pav_progress(jnp.asarray(values_T), jnp.asarray(masks)).sum(-1)
  np.testing.assert_allclose(terms["prm"], 2.0 * np.asarray(want_prm), atol=1e-6)
  np.testing.assert_allclose(terms["pav"], 0.5 * np.asarray(want_pav), atol=1e-6)
  # Telescoped by hand: the progress sums to Q(last step end) − Q(prompt); a row with no step has none.
  np.testing.assert_allclose(terms["pav"][:2], 0.5 * (values_T[[0, 1], [3, 1]] - values_T[:2, 0]), atol=1e-6)
  assert terms["prm"][2] == terms["pav"][2] == 0.0
  assert set(terms) == {"correct", "prm", "pav"}


@pytest.mark.slow
def test_implicit_prm_term_is_beta_times_the_log_ratio_summed_over_steps(runs, problems):
  c = _config(runs["dpo"])
  cfg = make_reward_config({"correct_coef": 0.0, "process": "implicit_prm",
                            "process_workdir": str(runs["dpo"]), "process_coef": 3.0})
  terms = _terms(problems, cfg)
  preset = get_preset("tiny", vocab_size=c["model"]["vocab_size"], **c["model"]["overrides"])
  assert c["model"]["init"] == "scratch"  # the smoke's reference is the preset at the run's seed
  ref = Transformer(preset, rngs=nnx.Rngs(c["seed"]))
  policy = _raw_params(runs["dpo"], Transformer(preset, rngs=nnx.Rngs(0)))
  beta = c["loss"]["beta"]
  ends = [[9, 19, len(TEXTS[0])], [10], []]
  # The plain forward's log-softmax at every position, one program a row length (not op by op).
  log_probs = nnx.jit(lambda m, ids: jax.nn.log_softmax(m(ids)[0].astype(jnp.float32)))
  for r, (p, t, s) in enumerate(zip(problems, TEXTS, STOPPED)):
    prompt, completion = _ids(p, t, s)
    ids = jnp.asarray([prompt + completion])
    logp = [np.asarray(log_probs(m, ids))[len(prompt) - 1:-1] for m in (policy, ref)]
    ratio_N = np.asarray([logp[0][j, tok] - logp[1][j, tok] for j, tok in enumerate(completion)])
    want = beta * ratio_N.sum()  # "single" step rewards telescope to the outcome reward β log π/π_ref
    if ends[r]:
      steps = implicit_prm_step_rewards(jnp.asarray(ratio_N), jnp.ones(len(ratio_N)), jnp.asarray(ends[r]),
                                        beta=beta)
      np.testing.assert_allclose(float(steps.sum()), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(terms["implicit_prm"][r], 3.0 * want, rtol=1e-3, atol=1e-5)
  assert terms["implicit_prm"][2] == 0.0 and abs(terms["implicit_prm"][0]) > 0


def test_bad_reward_settings_name_the_key(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"reward\.model_workdir=.*no run there"):
    make_reward_config({"model_workdir": str(tmp_path / "nowhere")})
  (tmp_path / "sft").mkdir()
  (tmp_path / "sft" / "config.json").write_text(json.dumps({"task": "sft"}))
  with pytest.raises(ValueError, match=r"reward\.prm_workdir=.*'sft' run, not a PRM"):
    make_reward_config({"prm_workdir": str(tmp_path / "sft")})
  with pytest.raises(ValueError, match=r"reward\.model_workdir=.*not a reward model"):
    make_reward_config({"model_workdir": str(tmp_path / "sft")})
  assert make_reward_config(load_config("grpo_tiny", "smoke").reward).scorers == {}  # the defaults: none
  with pytest.raises(ValueError, match=r"unknown key reward\.model_dir"):
    make_reward_config({"model_dir": "x"})
  with pytest.raises(ValueError, match=r"reward\.process must be"):
    make_reward_config({"process": "prime"})
  with pytest.raises(ValueError, match=r"needs reward\.process_workdir"):
    make_reward_config({"process": "pav"})


@pytest.mark.slow
def test_missing_or_incompatible_checkpoint_names_the_key_and_folder(runs, tmp_path):
  empty = tmp_path / "rm_empty"
  empty.mkdir()
  shutil.copy(runs["rm"] / "config.json", empty / "config.json")
  with pytest.raises(FileNotFoundError, match=rf"reward\.model_workdir=.*{empty.name}.*no checkpoints"):
    make_reward_config({"model_workdir": str(empty)})
  changed = tmp_path / "rm_changed"
  shutil.copytree(runs["rm"], changed)
  c = _config(changed)
  c["model"]["vocab_size"] = 1024  # a different model than the checkpoint holds
  (changed / "config.json").write_text(json.dumps(c))
  with pytest.raises(ValueError, match=rf"reward\.model_workdir=.*{changed.name}.*does not fit"):
    make_reward_config({"model_workdir": str(changed)})


@pytest.mark.slow
def test_rl_through_main_with_learned_terms(runs, tmp_path):
  args = ["--config=configs/grpo_tiny.py:smoke", f"--workdir={tmp_path}",
          f"--config.sft.workdir={runs['sft']}", "--config.mesh.data=1", "--config.total_steps=2",
          "--config.checkpoint_every_steps=2",
          "--config.eval_every_steps=0", f"--config.reward.model_workdir={runs['rm']}",
          f"--config.reward.prm_workdir={runs['prm']}", "--config.reward.process=implicit_prm",
          f"--config.reward.process_workdir={runs['dpo']}", "--config.reward.process_coef=0.1"]
  _main(args, runs["env"])
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2]
  for r in records:
    terms = [r[f"reward_{k}"] for k in ("correct", "model", "prm", "implicit_prm")]
    assert all(np.isfinite(terms)) and r["reward_mean"] == pytest.approx(sum(terms), abs=1e-5)
    assert r["reward_prm"] > 0  # min of σ(step logits) of sampled completions


@pytest.mark.slow
def test_learned_terms_score_the_same_under_the_rl_loops_mesh(runs, problems):
  """The RL loop scores inside its own mesh (the tests' 8 CPU devices); the scorers' params sit on one."""
  from w2s_jax import sharding as shd

  cfg = make_reward_config({"model_workdir": str(runs["rm"]), "prm_workdir": str(runs["prm"]),
                            "process": "implicit_prm", "process_workdir": str(runs["dpo"])})
  plain = _terms(problems, cfg)
  with jax.set_mesh(shd.make_mesh({"data": 2, "fsdp": -1})), nnx.logical_axis_rules(shd.get_rules("fsdp")):
    meshed = _terms(problems, cfg)
  assert set(plain) == set(meshed) == {"correct", "model", "prm", "implicit_prm"}
  for k in plain:
    np.testing.assert_allclose(meshed[k], plain[k], rtol=1e-5, atol=1e-7)
