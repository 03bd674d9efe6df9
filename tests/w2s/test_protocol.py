"""The weak-to-strong protocol's parts, and the smoke sweep end to end (with resume)."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import load_config
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.w2s import classify, protocol


def test_split_halves_is_a_seeded_partition():
  a, b = protocol.split_halves(11, seed=3)
  assert len(a) == 5 and len(b) == 6
  assert sorted(np.concatenate([a, b]).tolist()) == list(range(11))
  np.testing.assert_array_equal(protocol.split_halves(11, seed=3)[0], a)
  assert not np.array_equal(protocol.split_halves(11, seed=4)[0], a)


def test_split_halves_by_group_keeps_each_question_in_one_half():
  groups = ["q0"] * 3 + ["q1"] * 3 + ["q2"] * 3 + ["q3"] * 3 + ["q4"] * 3
  a, b = protocol.split_halves(15, seed=0, groups=groups)
  assert sorted(np.concatenate([a, b]).tolist()) == list(range(15))
  in_a, in_b = {groups[i] for i in a}, {groups[i] for i in b}
  assert not in_a & in_b and len(in_a) == 2 and len(in_b) == 3  # 5 questions: 2 to A, 3 to B, whole
  splits = {tuple(protocol.split_halves(15, seed=s, groups=groups)[0]) for s in range(8)}
  assert len(splits) > 1  # the seed chooses which questions
  with pytest.raises(ValueError, match="groups"):
    protocol.split_halves(14, seed=0, groups=groups)


def test_records_with_several_candidates_per_question():
  from w2s_jax.data import reasoning, w2s_sets

  train, test = w2s_sets.generate_splits("chain_sum_3x1", 40, 20, seed=0, candidates=3)
  assert len(train) == 120 and len(test) == 20 and len({r["id"] for r in train}) == 120
  for i in range(0, 120, 3):  # a question's records sit together, each with its own coin
    assert len({r["question"] for r in train[i:i + 3]}) == 1
  assert len({r["question"] for r in train}) == 40
  assert not {r["question"] for r in train} & {r["question"] for r in test}
  problems = {p.prompt: p for p in w2s_sets.variant_problems("chain_sum_3x1", "w2s_train", 40, pool="w2s")}
  for r in train:  # every label checked by reasoning-gym's scorer
    right = reasoning.score(problems[r["question"]], f"Answer: {r['candidate']}") == 1.0
    assert right == bool(r["hard_label"])
  assert 40 <= sum(r["hard_label"] for r in train) <= 80
  single = w2s_sets.generate("chain_sum_3x1", "train", 40, seed=0)
  assert [r for r in train if not r["id"].endswith(("-c1", "-c2"))] == single  # candidate 0 as before
  with pytest.raises(ValueError, match="W2S pool"):
    w2s_sets.generate("chain_sum_3x1", "train", 2600)  # its pool holds ~2,400


def test_label_noise_flips_the_requested_share():
  soft = np.tile([[0.9, 0.1]], (2000, 1)).astype(np.float32)
  noisy = protocol.add_label_noise(soft, 0.25, seed=0)
  flipped = noisy[:, 0] == np.float32(0.1)
  assert abs(flipped.mean() - 0.25) < 0.03
  np.testing.assert_array_equal(noisy[~flipped], soft[~flipped])
  assert protocol.add_label_noise(soft, 0.0, seed=0) is soft


def test_encode_truncates_from_the_left_and_checks_labels():
  tok = ByteTokenizer()
  records = [{"txt": "abcdef", "hard_label": 1}, {"txt": "xy", "hard_label": 0}]
  enc = classify.encode(records, tok, max_len=4)
  assert enc.truncated == 1
  assert tok.decode(enc.tokens_NL[0].tolist()) == "def"  # BOS + the last three bytes
  np.testing.assert_array_equal(enc.segment_ids_NL, [[1, 1, 1, 1], [1, 1, 1, 0]])
  np.testing.assert_array_equal(enc.soft_NC, [[0, 1], [1, 0]])
  with pytest.raises(ValueError, match="record 0: hard_label 2"):
    classify.encode([{"txt": "a", "hard_label": 2}], tok, max_len=4)


def test_batches_cover_each_epoch_once_and_report_progress():
  tok = ByteTokenizer()
  enc = classify.encode([{"txt": str(i), "hard_label": i % 2} for i in range(10)], tok, max_len=4)
  batches = classify.Batches(enc, batch_size=5, total_steps=8, seed=0)
  seen = np.concatenate([batches[0]["tokens"][:, 1], batches[1]["tokens"][:, 1]])
  assert sorted(seen.tolist()) == sorted(enc.tokens_NL[:, 1].tolist())
  assert batches[2]["step_frac_B"][0] == pytest.approx(0.25)


def test_linear_probe_fits_a_separable_problem_and_folds_standardisation():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(400, 5)) * [1, 10, 0.1, 1, 1] + 3.0
  y = (x[:, 1] - 3.0 + 20 * (x[:, 2] - 3.0) > 0).astype(int)
  w, b = classify.train_linear_probe(x, np.eye(2)[y], steps=400, lr=0.05)
  pred = np.argmax(x @ w + b, axis=1)
  assert (pred == y).mean() > 0.97


def test_summarize_medians_and_excludes_degenerate_pgr():
  raw = {"per_seed": [
    {"seed": s, "ground_truth": {"a": {"accuracy": 0.6}, "b": {"accuracy": c}},
     "transfer": [{"weak": "a", "strong": "b", "loss": "xent", "accuracy": t, "pgr": p}]}
    for s, c, t, p in [(0, 0.8, 0.7, 0.5), (1, 0.9, 0.75, 0.5), (2, 0.6, 0.62, float("nan"))]
  ]}
  s = protocol.summarize(raw)
  assert s["ceilings"]["b"]["median"] == pytest.approx(0.8) and s["ceilings"]["a"]["n"] == 3
  row = s["transfer"][0]
  assert row["accuracy"]["median"] == pytest.approx(0.7)
  assert row["pgr"]["n"] == 2 and row["pgr"]["median"] == pytest.approx(0.5)


@pytest.mark.slow
def test_smoke_sweep_runs_and_resumes(tmp_path, monkeypatch, w2s_cache):
  from w2s_jax.w2s.run import run_sweep

  # The ladder of tests/rl/test_own_task_runs.py's sweeps (4 steps), pretrained once per pytest run.
  monkeypatch.setenv("W2S_JAX_CACHE", str(w2s_cache))
  config = load_config("w2s_sweep", "smoke")
  with config.unlocked():
    # 10 steps: the classifier trainings of configs/debate_w2s.py:smoke and deception.py:smoke (same rungs,
    # batch, length and optimizer), so their compiled steps come from the run's compilation cache
    config.train.total_steps = 10
    config.ladder.total_steps = 4
  results = run_sweep(config, tmp_path / "run")
  out = tmp_path / "run"
  saved = json.loads((out / "results.json").read_text())
  assert set(saved["ladder"]) == {"ladder-0", "ladder-1"}
  assert saved["ladder"]["ladder-0"]["params"] < saved["ladder"]["ladder-1"]["params"]
  (seed,) = saved["per_seed"]
  assert set(seed["ground_truth"]) == {"ladder-0", "ladder-1"}
  assert {(t["weak"], t["strong"], t["loss"]) for t in seed["transfer"]} == {
    ("ladder-0", "ladder-1", "xent"), ("ladder-0", "ladder-1", "logconf")}
  for t in seed["transfer"]:
    assert 0.0 <= t["accuracy"] <= 1.0 and 0.0 <= t["weak_label_acc"] <= 1.0
  lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in lines] == [1, 2, 3, 4] and all("loss" in r for r in lines)
  assert (out / "plots" / "w2s_xent.png").stat().st_size > 1000
  # rerun: every training is read back, nothing retrains, the same numbers come out
  again = run_sweep(config, out)
  assert again["per_seed"] == results["per_seed"]


def test_probe_sweep_computes_each_sets_features_once_per_rung(tmp_path, monkeypatch):
  # Two seeds split the train set differently; the frozen features of the train and test sets are
  # computed once per rung, and each half's features are the matching rows of the whole set's.
  from flax import nnx

  from w2s_jax.models.presets import get_preset
  from w2s_jax.models.transformer import Transformer
  from w2s_jax.train.pretrain import Rung

  tok = ByteTokenizer()
  cfg = get_preset("ladder-0", vocab_size=tok.vocab_size)
  graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  rung = Rung("r0", cfg, graphdef, params, float("nan"), tmp_path)
  rng = np.random.default_rng(0)
  recs = [{"txt": f"{rng.integers(1000)} {i}", "hard_label": i % 2} for i in range(40)]
  train, test = classify.encode(recs[:30], tok, 16), classify.encode(recs[30:], tok, 16)
  calls = []
  real = classify.features
  monkeypatch.setattr(classify, "features", lambda g, p, d, *a: calls.append(len(d)) or real(g, p, d, *a))
  sweep = protocol.Sweep([rung], train, test, protocol.TrainSpec(mode="probe", probe_steps=5), tmp_path)
  sweep.run(losses=["xent"], seeds=[0, 1])
  assert sorted(calls) == [10, 30]
  a_idx, _ = protocol.split_halves(30, seed=1)
  direct = real(graphdef, params, train.take(a_idx))
  np.testing.assert_allclose(sweep.features(rung, train.take(a_idx)), direct, atol=1e-5)


def test_variant_corpus_is_written_once_as_jsonl_with_a_disjoint_held_out_split(tmp_path):
  # `ladder.corpus = "w2s:<variant>"`: the variant's pretraining documents as JSONL beside the rungs,
  # prompt = the question line, response = the rest; held-out documents chosen by id hash, not in train.
  from w2s_jax.data import corpus
  from w2s_jax.train import pretrain

  kw = dict(tokenizer="bytes", vocab_size=512, seq_len=64, steps=10, batch_size=4, lr=1e-3, seed=0)
  with pytest.raises(ValueError, match="ladder.corpus 'w2s:nope'"):
    pretrain.pretrain_config("ladder-0", corpus="w2s:nope", **kw)
  cfg = pretrain.pretrain_config("ladder-0", corpus="w2s:chain_sum_3x1", corpus_options={"problems": 200},
                                 **kw)
  assert cfg.data.corpus == "jsonl" and cfg.data.problems == 200 and "train_files" not in cfg.data
  out = pretrain._with_variant_files(cfg, tmp_path / "ladder-0-x")
  read = {s: [json.loads(x) for x in open(out.data[f"{s}_files"])] for s in ("train", "eval")}
  docs = {doc_id: text for doc_id, _, text in corpus.variant_documents("chain_sum_3x1", 200)}
  assert sorted(r["id"] for r in read["train"] + read["eval"]) == sorted(docs)
  assert 0 < len(read["eval"]) < 30  # eval_frac 0.05 of 200
  for r in read["train"] + read["eval"]:
    assert r["prompt"] + r["response"] == docs[r["id"]] and r["prompt"].endswith(" =\n")
  assert {r["id"] for r in read["eval"]} == {d for d in docs if corpus.in_test_split(d, 0.05)}
  mtime = Path(out.data.train_files).stat().st_mtime_ns  # a second rung reads the same files
  again = pretrain._with_variant_files(cfg, tmp_path / "ladder-1-y")
  assert again.data.train_files == out.data.train_files
  assert Path(out.data.train_files).stat().st_mtime_ns == mtime


def test_a_sweep_folder_refuses_to_resume_under_other_settings(tmp_path):
  from w2s_jax.config_files import start_workdir

  config = load_config("quickstart", "smoke")
  start_workdir(config, tmp_path, may_change=("seeds", "losses"))
  more = load_config("quickstart", "smoke")
  more.seeds = (0, 1)  # more seeds: the finished trainings stay valid
  start_workdir(more, tmp_path, may_change=("seeds", "losses"))
  other = load_config("quickstart", "smoke")
  other.train.loss_kwargs.logconf.warmup = "linear"  # same run names, other results: must not be reused
  with pytest.raises(ValueError, match=r"train.loss_kwargs.logconf.warmup: 'reference' -> 'linear'"):
    start_workdir(other, tmp_path, may_change=("seeds", "losses"))
  start_workdir(other, tmp_path)  # pipelines that reuse nothing do not check


def test_label_filter_works_in_the_strong_rungs_feature_space(tmp_path):
  # The strong student's half B is what label_filters makes of the weak labels in the STRONG rung's
  # features (computed here apart from the sweep); transfer runs carry the filter in their loss label.
  from flax import nnx

  from w2s_jax.models.presets import get_preset
  from w2s_jax.models.transformer import Transformer
  from w2s_jax.train.pretrain import Rung
  from w2s_jax.w2s import label_filters

  tok = ByteTokenizer()
  cfg = get_preset("ladder-0", vocab_size=tok.vocab_size)
  weak, strong = (Rung(name, cfg, *nnx.split(Transformer(cfg, rngs=nnx.Rngs(i))), float("nan"), tmp_path)
                  for i, name in enumerate(("r0", "r1")))
  rng = np.random.default_rng(0)
  recs = [{"txt": f"{rng.integers(1000)} {i}", "hard_label": i % 2} for i in range(40)]
  train, test = classify.encode(recs[:30], tok, 16), classify.encode(recs[30:], tok, 16)
  kwargs = {"k": 3, "drop_frac": 0.2}
  spec = protocol.TrainSpec(mode="probe", probe_steps=5, label_filter="knn_drop", label_filter_kwargs=kwargs)
  sweep = protocol.Sweep([weak, strong], train, test, spec, tmp_path)
  _, b_idx = protocol.split_halves(30, seed=0)
  half_b = train.take(b_idx)
  soft_NC = rng.dirichlet([1.0, 1.0], size=len(half_b)).astype(np.float32)
  data, info = sweep.weak_set(weak, strong, half_b, soft_NC, seed=0)
  feats = classify.features(strong.graphdef, strong.params, half_b)
  ref_soft, keep = label_filters.apply_label_filter("knn_drop", feats, soft_NC, seed=0, **kwargs)
  assert keep.sum() == 12  # 15 examples, floor(0.2 * 15) = 3 dropped
  assert info == {"label_filter": "knn_drop", "kept_frac": 12 / 15, "relabelled_frac": 0.0}
  np.testing.assert_array_equal(data.rows_N, half_b.rows_N[keep])
  np.testing.assert_allclose(data.soft_NC, ref_soft[keep], atol=1e-6)
  raw = sweep.run(losses=["xent"], seeds=[0])
  (t,) = raw["per_seed"][0]["transfer"]
  assert (t["loss"], t["label_filter"], t["kept_frac"]) == ("xent+knn_drop", "knn_drop", 12 / 15)
  assert (tmp_path / "runs" / "seed0" / "w2s-r0-to-r1-xent+knn_drop" / "result.json").exists()


def test_an_unknown_label_filter_is_an_error_naming_the_key():
  config = load_config("w2s_sweep", "smoke")
  with config.unlocked():
    config.train.label_filter = "knn"
  with pytest.raises(ValueError, match="train.label_filter = 'knn'"):
    protocol.sweep_spec(config)
