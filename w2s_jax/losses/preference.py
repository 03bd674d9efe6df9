"""Preference-optimization losses in the forms TRL implements them (reference/formulas.md §10).

Every loss is a pure function of per-sequence arrays and returns `(loss_B, metrics)`: the per-pair (or,
for KTO, per-example) loss, whose batch mean is TRL's loss, and a dict of per-example [B] metrics named
as TRL logs them (`rewards/chosen`, `rewards/rejected`, `rewards/margins`, `rewards/accuracies`, ...).
Metrics carry no gradient; an objective sums them over the batch and divides once.

Inputs are sequence log-probabilities of the completion tokens only (prompt and padding masked out):
`*_logp_B` are **summed** log-probs Σ_t log π(y_t | x, y_<t); `*_avg_logp_B` are **per-token averaged**
ones (the sum divided by the completion length), which SimPO and ORPO are defined on. Chosen (preferred,
y_w) and rejected (y_l) sequences of one pair share an index b. `h` below is the DPO log-ratio margin
h = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)].

| registry name    | function                       | loss per pair                                   |
|------------------|--------------------------------|-------------------------------------------------|
| `dpo`, `sigmoid` | `dpo_loss`                     | −(1−ε)·log σ(βh) − ε·log σ(−βh)                 |
| `robust`         | `dpo_loss(loss_type="robust")` | [−(1−ε)·log σ(βh) + ε·log σ(−βh)] / (1−2ε)      |
| `ipo`            | `ipo_loss`                     | (h̄ − 1/(2β))², h̄ on length-averaged log-probs |
| `hinge`          | `hinge_loss`                   | max(0, 1 − βh)                                  |
| `rpo`            | `rpo_loss`                     | DPO + α·NLL(y_w)                                |
| `simpo`          | `simpo_loss`                   | −log σ(β(ā_w − ā_l) − γ)                        |
| `orpo`           | `orpo_loss`                    | NLL(y_w) − β·log σ(log-odds ratio)              |
| `kto`            | `kto_loss`                     | λ_D(1 − σ(β(r − z0))) or λ_U(1 − σ(β(z0 − r)))  |
| `bradley_terry`  | `bradley_terry_loss`           | −log σ(r_w − r_l − m)                           |
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

Metrics = dict[str, jax.Array]
DPO_LOSS_TYPES = ("sigmoid", "robust")


def _float(x: jax.Array | float) -> jax.Array:
  """As a float array of at least float32 precision (bf16 inputs are upcast)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _reward_metrics(chosen_rewards_B: jax.Array, rejected_rewards_B: jax.Array) -> Metrics:
  """TRL's reward metrics of a pair: implicit rewards, their margin and whether it is positive."""
  chosen_rewards_B = jax.lax.stop_gradient(chosen_rewards_B)
  rejected_rewards_B = jax.lax.stop_gradient(rejected_rewards_B)
  return {
    "rewards/chosen": chosen_rewards_B,
    "rewards/rejected": rejected_rewards_B,
    "rewards/margins": chosen_rewards_B - rejected_rewards_B,
    "rewards/accuracies": (chosen_rewards_B > rejected_rewards_B).astype(chosen_rewards_B.dtype),
  }


def _sigmoid_family(
  logits_B: jax.Array, label_smoothing: float | jax.Array, loss_type: str
) -> jax.Array:
  """The sigmoid-of-margin losses on logits_B = β·(margin); see `dpo_loss` (options checked there)."""
  pos_B, neg_B = jax.nn.log_sigmoid(logits_B), jax.nn.log_sigmoid(-logits_B)
  if loss_type == "sigmoid":
    return -(1.0 - label_smoothing) * pos_B - label_smoothing * neg_B
  return (-(1.0 - label_smoothing) * pos_B + label_smoothing * neg_B) / (1.0 - 2.0 * label_smoothing)


def _check_dpo_options(label_smoothing: float | jax.Array, loss_type: str) -> None:
  """Raises before any array work on an unknown `loss_type` or a robust ε outside [0, 0.5)."""
  if loss_type not in DPO_LOSS_TYPES:
    raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose one of {DPO_LOSS_TYPES}")
  if loss_type == "robust" and isinstance(label_smoothing, int | float) and not 0.0 <= label_smoothing < 0.5:
    raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {label_smoothing}")


def dpo_loss(
  policy_chosen_logp_B: jax.Array,
  policy_rejected_logp_B: jax.Array,
  ref_chosen_logp_B: jax.Array,
  ref_rejected_logp_B: jax.Array,
  *,
  beta: float = 0.1,
  label_smoothing: float = 0.0,
  loss_type: str = "sigmoid",
) -> tuple[jax.Array, Metrics]:
  """Direct Preference Optimization (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290).

  With h = (π_w − ref_w) − (π_l − ref_l) on summed log-probs and ε = `label_smoothing`:
    sigmoid (TRL ≤ v0.19 form, cDPO when ε > 0, https://ericmitchell.ai/cdpo.pdf):
      loss = −(1−ε)·log σ(βh) − ε·log σ(−βh)
    robust (Chowdhury et al. 2024, https://arxiv.org/abs/2403.00409), unbiased under label-flip rate ε:
      loss = [−(1−ε)·log σ(βh) + ε·log σ(−βh)] / (1 − 2ε),  0 ≤ ε < 0.5
  TRL HEAD's `sigmoid` ignores `label_smoothing`; here ε = 0 gives that form. ε = 0.5 makes the sigmoid
  loss even in h: it is minimal (log 2) at h = 0 and pulls any margin back to zero.

  Args:
    policy_chosen_logp_B: summed log-probs of the chosen completions under the policy [B].
    policy_rejected_logp_B: the same for the rejected completions [B].
    ref_chosen_logp_B: summed log-probs of the chosen completions under the reference model [B].
    ref_rejected_logp_B: the same for the rejected completions [B].
    beta: β, the strength of the implicit KL penalty (TRL default 0.1).
    label_smoothing: ε, the assumed probability that a preference label is flipped.
    loss_type: "sigmoid" or "robust".

  Returns:
    (loss_B, metrics) with TRL's `rewards/chosen` = β(π_w − ref_w), `rewards/rejected`,
    `rewards/margins` = βh and `rewards/accuracies` = 1[βh > 0], all [B].
  """
  _check_dpo_options(label_smoothing, loss_type)
  chosen_rewards_B = beta * (_float(policy_chosen_logp_B) - _float(ref_chosen_logp_B))
  rejected_rewards_B = beta * (_float(policy_rejected_logp_B) - _float(ref_rejected_logp_B))
  loss_B = _sigmoid_family(chosen_rewards_B - rejected_rewards_B, label_smoothing, loss_type)
  return loss_B, _reward_metrics(chosen_rewards_B, rejected_rewards_B)


def ipo_loss(
  policy_chosen_logp_B: jax.Array,
  policy_rejected_logp_B: jax.Array,
  ref_chosen_logp_B: jax.Array,
  ref_rejected_logp_B: jax.Array,
  *,
  beta: float = 0.1,
  chosen_lengths_B: jax.Array | None = None,
  rejected_lengths_B: jax.Array | None = None,
) -> tuple[jax.Array, Metrics]:
  """Identity Preference Optimisation (Azar et al. 2023, https://arxiv.org/abs/2310.12036, Eq. 17).

  loss = (h̄ − 1/(2β))²,  h̄ = (π_w − ref_w)/|y_w| − (π_l − ref_l)/|y_l|

  As in TRL, the log-ratios are **per-token averages** (β plays the paper's τ). Pass summed log-probs
  with the completion lengths (clamped to ≥ 1, as TRL does), or already averaged log-probs and no
  lengths. The loss is minimal (zero) at h̄ = 1/(2β): IPO regresses the margin to a target rather
  than pushing it to infinity.

  Args:
    policy_chosen_logp_B, policy_rejected_logp_B: policy log-probs [B] (summed if lengths are given).
    ref_chosen_logp_B, ref_rejected_logp_B: reference log-probs [B], the same kind.
    beta: β = τ, the regularisation; the target margin is 1/(2β).
    chosen_lengths_B: completion token counts of the chosen sequences [B], or None.
    rejected_lengths_B: completion token counts of the rejected sequences [B], or None.

  Returns:
    (loss_B, metrics) with rewards β·(averaged log-ratio) as in `dpo_loss`.
  """
  if (chosen_lengths_B is None) != (rejected_lengths_B is None):
    raise ValueError("pass both chosen_lengths_B and rejected_lengths_B, or neither")
  chosen_ratio_B = _float(policy_chosen_logp_B) - _float(ref_chosen_logp_B)
  rejected_ratio_B = _float(policy_rejected_logp_B) - _float(ref_rejected_logp_B)
  if chosen_lengths_B is not None:
    chosen_ratio_B = chosen_ratio_B / jnp.maximum(_float(chosen_lengths_B), 1.0)
    rejected_ratio_B = rejected_ratio_B / jnp.maximum(_float(rejected_lengths_B), 1.0)
  loss_B = jnp.square(chosen_ratio_B - rejected_ratio_B - 1.0 / (2.0 * beta))
  return loss_B, _reward_metrics(beta * chosen_ratio_B, beta * rejected_ratio_B)


def hinge_loss(
  policy_chosen_logp_B: jax.Array,
  policy_rejected_logp_B: jax.Array,
  ref_chosen_logp_B: jax.Array,
  ref_rejected_logp_B: jax.Array,
  *,
  beta: float = 0.1,
) -> tuple[jax.Array, Metrics]:
  """DPO's hinge variant, SLiC-HF's calibration loss (Zhao et al. 2023, https://arxiv.org/abs/2305.10425).

  loss = max(0, 1 − βh) on summed log-probs; TRL's `loss_type="hinge"` (1/β is SLiC's margin δ).

  Args:
    policy_chosen_logp_B, policy_rejected_logp_B: summed policy log-probs [B].
    ref_chosen_logp_B, ref_rejected_logp_B: summed reference log-probs [B].
    beta: β; pairs with βh ≥ 1 have zero loss and no gradient.

  Returns:
    (loss_B, metrics) as in `dpo_loss`.
  """
  chosen_rewards_B = beta * (_float(policy_chosen_logp_B) - _float(ref_chosen_logp_B))
  rejected_rewards_B = beta * (_float(policy_rejected_logp_B) - _float(ref_rejected_logp_B))
  loss_B = jax.nn.relu(1.0 - (chosen_rewards_B - rejected_rewards_B))
  return loss_B, _reward_metrics(chosen_rewards_B, rejected_rewards_B)


def rpo_loss(
  policy_chosen_logp_B: jax.Array,
  policy_rejected_logp_B: jax.Array,
  ref_chosen_logp_B: jax.Array,
  ref_rejected_logp_B: jax.Array,
  chosen_nll_B: jax.Array,
  *,
  beta: float = 0.1,
  rpo_alpha: float = 1.0,
  label_smoothing: float = 0.0,
  loss_type: str = "sigmoid",
) -> tuple[jax.Array, Metrics]:
  """RPO: DPO plus a negative log-likelihood term on the chosen completion.

  loss = dpo_loss(...) + α·NLL(y_w)   (Pang et al. 2024, Iterative Reasoning Preference Optimization,
  https://arxiv.org/abs/2404.19733; TRL v0.19 `rpo_alpha`, HEAD `loss_type=["sigmoid", "sft"]`).

  TRL's NLL is the token-mean cross-entropy over all chosen tokens of the batch; per pair the natural
  input is the token-mean NLL of each chosen completion (−summed log-prob / length), whose batch mean
  equals TRL's when the chosen completions have equal lengths.

  Args:
    policy_chosen_logp_B, policy_rejected_logp_B, ref_chosen_logp_B, ref_rejected_logp_B: as `dpo_loss`.
    chosen_nll_B: negative log-likelihood of each chosen completion [B] (differentiable).
    beta, label_smoothing, loss_type: as `dpo_loss`.
    rpo_alpha: α, the weight of the NLL term (the paper recommends 1.0).

  Returns:
    (loss_B, metrics): `dpo_loss`'s metrics plus `nll_loss` [B].
  """
  loss_B, metrics = dpo_loss(
    policy_chosen_logp_B, policy_rejected_logp_B, ref_chosen_logp_B, ref_rejected_logp_B,
    beta=beta, label_smoothing=label_smoothing, loss_type=loss_type,
  )
  chosen_nll_B = _float(chosen_nll_B)
  metrics["nll_loss"] = jax.lax.stop_gradient(chosen_nll_B)
  return loss_B + rpo_alpha * chosen_nll_B, metrics


def simpo_loss(
  policy_chosen_avg_logp_B: jax.Array,
  policy_rejected_avg_logp_B: jax.Array,
  *,
  beta: float = 0.1,
  gamma: float | None = None,
  gamma_beta_ratio: float | None = None,
  label_smoothing: float = 0.0,
) -> tuple[jax.Array, Metrics]:
  """SimPO (Meng et al. 2024, https://arxiv.org/abs/2405.14734): reference-free, length-normalised.

  loss = −(1−ε)·log σ(β(ā_w − ā_l) − γ) − ε·log σ(−β(ā_w − ā_l) + γ)

  ā are per-token average log-probs. γ is the target reward margin: TRL's `simpo_gamma` (CPO trainer,
  default 0.5, which computes β·((ā_w − ā_l) − γ/β)), or γ = `gamma_beta_ratio`·β as in the SimPO repo.
  TRL's CPO trainer also adds `cpo_alpha`·NLL(y_w) by default ("CPO-SimPO"); this is pure SimPO (add
  the NLL in the objective if wanted). TRL's default β is 0.1; the paper uses β ≈ 2–2.5.

  Args:
    policy_chosen_avg_logp_B: mean token log-prob of each chosen completion [B].
    policy_rejected_avg_logp_B: mean token log-prob of each rejected completion [B].
    beta: β, the reward scale.
    gamma: γ, the target margin (default 0.5 when `gamma_beta_ratio` is None too).
    gamma_beta_ratio: γ/β, an alternative to `gamma`; pass one of the two.
    label_smoothing: ε, as in `dpo_loss`.

  Returns:
    (loss_B, metrics) with rewards β·ā as TRL's CPO trainer logs them.
  """
  if gamma is not None and gamma_beta_ratio is not None:
    raise ValueError("pass gamma or gamma_beta_ratio, not both")
  if gamma is None:
    gamma = 0.5 if gamma_beta_ratio is None else gamma_beta_ratio * beta
  chosen_rewards_B = beta * _float(policy_chosen_avg_logp_B)
  rejected_rewards_B = beta * _float(policy_rejected_avg_logp_B)
  loss_B = _sigmoid_family(chosen_rewards_B - rejected_rewards_B - gamma, label_smoothing, "sigmoid")
  return loss_B, _reward_metrics(chosen_rewards_B, rejected_rewards_B)


def log1mexp(x: jax.Array) -> jax.Array:
  """log(1 − eˣ) for x < 0, accurate on both sides of −ln 2 (Mächler 2012)."""
  return jnp.where(x > -jnp.log(2.0), jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def orpo_loss(
  policy_chosen_avg_logp_B: jax.Array,
  policy_rejected_avg_logp_B: jax.Array,
  chosen_nll_B: jax.Array | None = None,
  *,
  beta: float = 0.1,
) -> tuple[jax.Array, Metrics]:
  """ORPO, odds-ratio preference optimisation (Hong et al. 2024, https://arxiv.org/abs/2403.07691).

  log_odds = (ā_w − ā_l) − [log(1 − e^{ā_w}) − log(1 − e^{ā_l})]
  loss = NLL(y_w) − β·log σ(log_odds)          (λ of the paper is TRL's `beta`)

  ā are per-token average log-probs. Average log-probs are clamped to ≤ −1e-6 before log1mexp, where
  log(1 − eˣ) diverges at 0 (a completion with probability 1); elsewhere the values are exact.

  Args:
    policy_chosen_avg_logp_B: mean token log-prob of each chosen completion [B].
    policy_rejected_avg_logp_B: mean token log-prob of each rejected completion [B].
    chosen_nll_B: the SFT term per pair [B]; default −ā_w, the token-mean NLL of the chosen completion.
    beta: λ, the weight of the odds-ratio term.

  Returns:
    (loss_B, metrics): rewards β·ā, `log_odds_ratio` = log σ(log_odds), `log_odds_chosen` = log_odds and
    `nll_loss`, all [B].
  """
  chosen_B = _float(policy_chosen_avg_logp_B)
  rejected_B = _float(policy_rejected_avg_logp_B)
  nll_B = -chosen_B if chosen_nll_B is None else _float(chosen_nll_B)
  safe = lambda a_B: jnp.minimum(a_B, -1e-6)
  log_odds_B = (chosen_B - rejected_B) - (log1mexp(safe(chosen_B)) - log1mexp(safe(rejected_B)))
  ratio_B = jax.nn.log_sigmoid(log_odds_B)
  metrics = _reward_metrics(beta * chosen_B, beta * rejected_B)
  metrics["log_odds_ratio"] = jax.lax.stop_gradient(ratio_B)
  metrics["log_odds_chosen"] = jax.lax.stop_gradient(log_odds_B)
  metrics["nll_loss"] = jax.lax.stop_gradient(nll_B)
  return nll_B - beta * ratio_B, metrics


def kto_kl(policy_kl_logp_B: jax.Array, ref_kl_logp_B: jax.Array) -> jax.Array:
  """KTO's reference point before clamping: the batch mean of log π(y'|x) − log π_ref(y'|x).

  y' are mismatched completions (TRL pairs each prompt with the next example's completion). TRL also
  averages this over data-parallel ranks; under `jit` over a sharded batch the mean is already global.
  """
  return jnp.mean(_float(policy_kl_logp_B) - _float(ref_kl_logp_B))


def kto_loss(
  policy_logp_B: jax.Array,
  ref_logp_B: jax.Array,
  desirable_B: jax.Array,
  kl: jax.Array | float,
  *,
  beta: float = 0.1,
  desirable_weight: float = 1.0,
  undesirable_weight: float = 1.0,
) -> tuple[jax.Array, Metrics]:
  """Kahneman–Tversky Optimization (Ethayarajh et al. 2024, https://arxiv.org/abs/2402.01306).

  r = log π(y|x) − log π_ref(y|x) (summed),  z0 = max(0, kl) with no gradient,
    desirable:   loss = λ_D·(1 − σ(β(r − z0)))
    undesirable: loss = λ_U·(1 − σ(β(z0 − r)))
  TRL's loss is the mean over all examples. The paper (Eq. 8) recommends λ_D·n_D / (λ_U·n_U) in
  [1, 4/3]. With λ_D = λ_U, a desirable example at r = z0 + d and an undesirable one at r = z0 − d
  have the same loss.

  Args:
    policy_logp_B: summed completion log-probs under the policy [B] (unpaired examples).
    ref_logp_B: the same under the reference model [B].
    desirable_B: bool (or 0/1) [B], True for desirable (chosen) examples.
    kl: scalar estimate of the KL reference point, e.g. `kto_kl(...)` on mismatched pairs; clamped at 0.
    beta: β.
    desirable_weight: λ_D.
    undesirable_weight: λ_U.

  Returns:
    (loss_B, metrics): TRL's sums and counts per example, `rewards/chosen_sum` = β·r on desirable
    examples (0 elsewhere), `rewards/rejected_sum`, `logps/chosen_sum`, `logps/rejected_sum`,
    `count/chosen`, `count/rejected`, and `kl` = z0 broadcast to [B].
  """
  logratio_B = _float(policy_logp_B) - _float(ref_logp_B)
  desirable_B = jnp.asarray(desirable_B).astype(bool)
  z0 = jax.lax.stop_gradient(jnp.maximum(_float(kl), 0.0))
  chosen_loss_B = desirable_weight * (1.0 - jax.nn.sigmoid(beta * (logratio_B - z0)))
  rejected_loss_B = undesirable_weight * (1.0 - jax.nn.sigmoid(beta * (z0 - logratio_B)))
  loss_B = jnp.where(desirable_B, chosen_loss_B, rejected_loss_B)
  rewards_B = jax.lax.stop_gradient(beta * logratio_B)
  logps_B = jax.lax.stop_gradient(_float(policy_logp_B))
  d_B = desirable_B.astype(rewards_B.dtype)
  metrics = {
    "rewards/chosen_sum": rewards_B * d_B,
    "rewards/rejected_sum": rewards_B * (1.0 - d_B),
    "logps/chosen_sum": logps_B * d_B,
    "logps/rejected_sum": logps_B * (1.0 - d_B),
    "count/chosen": d_B,
    "count/rejected": 1.0 - d_B,
    "kl": jnp.broadcast_to(z0, rewards_B.shape),
  }
  return loss_B, metrics


def bradley_terry_loss(
  chosen_rewards_B: jax.Array,
  rejected_rewards_B: jax.Array,
  *,
  margin_B: jax.Array | None = None,
  center_rewards_coefficient: float | None = None,
) -> tuple[jax.Array, Metrics]:
  """Bradley–Terry reward-model loss (InstructGPT, Ouyang et al. 2022, https://arxiv.org/abs/2203.02155).

  loss = −log σ(r_w − r_l − m) + c·(r_w + r_l)²

  m is an optional per-pair margin (Llama 2, https://arxiv.org/abs/2307.09288); c is TRL's
  `center_rewards_coefficient` (Eisenstein et al. 2023, https://arxiv.org/abs/2312.09244), which keeps
  rewards centred on zero. The batch mean is TRL's `RewardTrainer` loss.

  Args:
    chosen_rewards_B: scalar scores of the chosen sequences [B].
    rejected_rewards_B: scalar scores of the rejected sequences [B].
    margin_B: the margin m per pair [B], or None.
    center_rewards_coefficient: c, or None.

  Returns:
    (loss_B, metrics): TRL's `accuracy` = 1[r_w > r_l], `margin` = r_w − r_l, and `mean_reward` =
    (r_w + r_l)/2, all [B].
  """
  chosen_B, rejected_B = _float(chosen_rewards_B), _float(rejected_rewards_B)
  logits_B = chosen_B - rejected_B
  if margin_B is not None:
    logits_B = logits_B - _float(margin_B)
  loss_B = -jax.nn.log_sigmoid(logits_B)
  if center_rewards_coefficient is not None:
    loss_B = loss_B + center_rewards_coefficient * jnp.square(chosen_B + rejected_B)
  margin = jax.lax.stop_gradient(chosen_B - rejected_B)
  metrics = {
    "accuracy": (margin > 0).astype(margin.dtype),
    "margin": margin,
    "mean_reward": jax.lax.stop_gradient(0.5 * (chosen_B + rejected_B)),
  }
  return loss_B, metrics


PREFERENCE_LOSSES: dict[str, Callable[..., tuple[jax.Array, Metrics]]] = {
  "dpo": dpo_loss,
  "sigmoid": dpo_loss,
  "robust": functools.partial(dpo_loss, loss_type="robust"),
  "ipo": ipo_loss,
  "hinge": hinge_loss,
  "rpo": rpo_loss,
  "simpo": simpo_loss,
  "orpo": orpo_loss,
  "kto": kto_loss,
  "bradley_terry": bradley_terry_loss,
}
