"""Tree-structured Monte Carlo values and advantages: Prefix-to-Tree/TEMPO, TreeRL, VinePPO.

Shape legend: G responses of one prompt's group, L tokens, N tree nodes (static, padded), S steps, K
Monte Carlo rollouts per step. Leading batch dimensions are handled with `jax.vmap` (trees, groups) or
broadcast (step functions, which act on the last axes).

**Flat trees.** A rollout tree is a set of padded arrays of static length N, so every function jits:
`parent_N` (int, −1 for a root; a forest of several roots is allowed), `reward_N` (read at leaves only),
optional `valid_N` (False on padding) and optional `is_leaf_N` (by default: valid nodes with no valid
child). Node order is free: values are summed up from the leaves by a `lax.while_loop` over depth with
`segment_sum`, so no topological sort is needed. A response that ends at an internal node is drawn as an
extra leaf child of that node (or that node is marked in `is_leaf_N`). Token-level advantages of a segment
tree are `gather_to_tokens(adv_N, node_ids_BL)`.

References: TEMPO / Prefix-to-Tree (https://arxiv.org/abs/2509.18314), TreeRL (https://arxiv.org/abs/2506.11902,
github.com/THUDM/TreeRL), VinePPO (https://arxiv.org/abs/2410.01679, github.com/McGill-NLP/VinePPO). Exact
forms and their verification status: `shared/reference/formulas.md` §1–§3.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

WEIGHTINGS = ("sqrt", "none")
LEAF_BASELINES = ("none", "loo")


def _valid(parent_N: jax.Array, valid_N: jax.Array | None) -> jax.Array:
  return jnp.ones(parent_N.shape, bool) if valid_N is None else valid_N.astype(bool)


def _leaves(parent_N: jax.Array, valid_N: jax.Array) -> jax.Array:
  """Valid nodes without a valid child."""
  n = parent_N.shape[0]
  child_of_N = jnp.where(valid_N & (parent_N >= 0), parent_N, n)
  children_N = jax.ops.segment_sum(jnp.ones(n, jnp.int32), child_of_N, n + 1)[:n]
  return valid_N & (children_N == 0)


def root_ids(parent_N: jax.Array) -> jax.Array:
  """The root of every node's tree, by pointer jumping (⌈log2 N⌉ + 1 gathers).

  Args:
    parent_N: parent index per node [N], −1 for a root.

  Returns:
    root index per node [N] (a root maps to itself).
  """
  n = parent_N.shape[0]
  anc_N = jnp.where(parent_N >= 0, parent_N, jnp.arange(n))
  for _ in range(max(1, math.ceil(math.log2(max(n, 2)))) + 1):
    anc_N = anc_N[anc_N]
  return anc_N


def prefix_tree_values(
  parent_N: jax.Array,
  reward_N: jax.Array,
  *,
  is_leaf_N: jax.Array | None = None,
  valid_N: jax.Array | None = None,
  weight_N: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Value of every node (prefix) = mean outcome of the leaves below it (Prefix-to-Tree, TreeRL).

  V(s) = Σ_{l∈L(s)} w_l r_l / Σ_{l∈L(s)} w_l, where L(s) are the leaves in the subtree of s (a leaf
  counts itself). Hence V(s) = Σ_c n_c V(c) / Σ_c n_c over the children c of s with leaf counts n_c.
  TEMPO: https://arxiv.org/abs/2509.18314 ("average reward of all descendant completions");
  TreeRL: V(s_n) = (1/|L(s_n)|) Σ_{l∈L(s_n)} 1[l correct].

  Args:
    parent_N: parent index per node [N], −1 for roots (and, preferably, for padding).
    reward_N: outcome reward per node [N]; read at leaves only.
    is_leaf_N: which nodes carry an outcome [N]; default: valid nodes without a valid child.
    valid_N: False on padding nodes [N]; default all valid.
    weight_N: multiplicity of each leaf [N] (e.g. identical responses merged into one leaf); default 1.

  Returns:
    (values_N, leaves_N): f32 node values (0 where no leaf is below) and the weighted leaf count below
    each node (|L(s)| for unit weights).
  """
  n = parent_N.shape[0]
  valid_N = _valid(parent_N, valid_N)
  parent_N = jnp.where(valid_N, parent_N, -1).astype(jnp.int32)
  leaf_N = _leaves(parent_N, valid_N) if is_leaf_N is None else is_leaf_N.astype(bool) & valid_N
  w_N = jnp.ones(n, jnp.float32) if weight_N is None else weight_N.astype(jnp.float32)
  w_N = jnp.where(leaf_N, w_N, 0.0)
  wr_N = jnp.where(leaf_N, w_N * reward_N.astype(jnp.float32), 0.0)

  def cond(carry):
    node_N, _, _, it = carry
    return jnp.any(node_N >= 0) & (it <= n)  # depth < N; the bound only guards against cycles

  def body(carry):
    node_N, sum_N, count_N, it = carry
    seg_N = jnp.where(node_N >= 0, node_N, n)
    sum_N = sum_N + jax.ops.segment_sum(wr_N, seg_N, n + 1)[:n]
    count_N = count_N + jax.ops.segment_sum(w_N, seg_N, n + 1)[:n]
    node_N = jnp.where(node_N >= 0, parent_N[jnp.maximum(node_N, 0)], -1)
    return node_N, sum_N, count_N, it + 1

  init = (jnp.where(leaf_N, jnp.arange(n), -1), jnp.zeros(n), jnp.zeros(n), jnp.int32(0))
  _, sum_N, count_N, _ = jax.lax.while_loop(cond, body, init)
  values_N = jnp.where(count_N > 0, sum_N / jnp.where(count_N > 0, count_N, 1.0), 0.0)
  return values_N, count_N


def gather_to_tokens(values_N: jax.Array, ids_BL: jax.Array) -> jax.Array:
  """Gives every token the value of its node / step: out[..., l] = values[..., ids[..., l]], 0 where id < 0.

  Args:
    values_N: per-node or per-step values, [N] (one tree, shared by all tokens) or [..., N] with the same
      leading dims as `ids_BL`.
    ids_BL: node or step index of every token [..., L], −1 for none (prompt, padding).

  Returns:
    per-token values [..., L].
  """
  safe_BL = jnp.clip(ids_BL, 0, values_N.shape[-1] - 1)
  if values_N.ndim == 1:
    gathered_BL = values_N[safe_BL]
  else:
    gathered_BL = jnp.take_along_axis(values_N, safe_BL, axis=-1)
  return jnp.where(ids_BL >= 0, gathered_BL, 0.0)


def _group_scale(rewards_G: jax.Array, eps: float, ddof: int) -> tuple[jax.Array, jax.Array]:
  """(r − mean, std + eps); std is 0 when the group is too small for `ddof`."""
  g = rewards_G.shape[0]
  std = jnp.std(rewards_G, ddof=ddof) if g > ddof else jnp.float32(0.0)
  return rewards_G - jnp.mean(rewards_G), std + eps


def _prefix_equal(tokens_GL: jax.Array, mask_GL: jax.Array) -> jax.Array:
  """same[i, j, u]: responses i, j agree on positions 0..u; an end (mask 0) is a token. [G, G, L+1]."""
  tok_GL = jnp.pad(tokens_GL, ((0, 0), (0, 1)))
  m_GL = jnp.pad(mask_GL.astype(bool), ((0, 0), (0, 1)))
  both_GGL = m_GL[:, None] & m_GL[None]
  match_GGL = (both_GGL & (tok_GL[:, None] == tok_GL[None])) | (~m_GL[:, None] & ~m_GL[None])
  return jnp.cumsum(~match_GGL, axis=-1) == 0


def tempo_advantages(
  tokens_GL: jax.Array,
  mask_GL: jax.Array,
  rewards_G: jax.Array,
  *,
  td_weight: float = 1.0,
  normalize: bool = True,
  td_normalize: bool | None = None,
  root_td: bool = False,
  eps: float = 1e-6,
  ddof: int = 1,
) -> jax.Array:
  """TEMPO: GRPO's group-relative advantage plus branch-gated TD terms on the group's prefix tree.

  Prefix-to-Tree merges the G responses of one prompt into a token trie. With s_{i,t} = o_{i,<t} the state
  before token t and D(s) = {j : o_j starts with s}; the end of a response counts as a token whose edge is
  merged into the response's last token, so the state after that token holds only its identical copies
  (and a response that is a strict prefix of another still gets its TD credit):
    V(s)      = (1/|D(s)|) Σ_{j∈D(s)} r_j
    r̃_i       = (r_i − mean_j r_j) / (std_j r_j + eps)
    A_{i,t}   = r̃_i + td_weight · branch(s_{i,t}) · (V(s_{i,t+1}) − V(s_{i,t})) / (std_j r_j + eps)
  branch(s) = 1 when s has ≥ 2 children (tokens or ends) among D(s), i.e. |D(s_{i,t+1})| < |D(s_{i,t})|.
  https://arxiv.org/abs/2509.18314; the exact equation is reconstructed (formulas.md §1, tagged [U]); the TD
  weight is assumed 1 and the TD error is divided by the group reward std, as a reviewer quotes.

  `root_td` (open choice): the root (the prompt) branches whenever two responses differ in their first
  token, and its TD term (V(s_{i,1}) − V(root))/std equals r̃_i for a unique first token, i.e. it repeats
  the GRPO term. With `root_td=False` (default) the root's branch is left to the GRPO term, so TEMPO equals
  GRPO exactly when no two responses share a first token (the paper's "reduces to GRPO" property); with
  `root_td=True` every branch point including the root gets its TD term (formulas.md §1's worked example),
  and Σ_t TD_{i,t} telescopes to (V(leaf_i) − V(root))/std, which is r̃_i for a response without copies.

  Cost: O(G²·L) memory and work (pairwise prefix equality), one einsum; no loop over tokens.

  Args:
    tokens_GL: response token ids [G, L] (prompt excluded), right-padded.
    mask_GL: 1 on response tokens [G, L], a prefix of each row (1s then 0s).
    rewards_G: outcome rewards [G].
    td_weight: coefficient of the TD term (1 in the reconstruction).
    normalize: divide the group term by std + eps (GRPO); False gives r_i − mean (Dr. GRPO).
    td_normalize: divide the TD term by std + eps; default: same as `normalize`.
    root_td: also add the TD term at the root branch (see above).
    eps: added to the std (1e-6 as verl).
    ddof: std degrees of freedom (1: unbiased, as torch.std); a group of size ≤ ddof gets std 0.

  Returns:
    per-token advantages adv_GL, f32, 0 where mask is 0 and for a group whose rewards are all equal
    (including G = 1, formulas.md §1; `grpo_advantages` keeps a lone response's raw reward instead).
    For a batch of prompts, `jax.vmap` it.
  """
  mask_GL = mask_GL.astype(bool)
  rewards_G = rewards_G.astype(jnp.float32)
  g, _ = tokens_GL.shape
  centred_G, scale = _group_scale(rewards_G, eps, ddof)
  group_G = centred_G / scale if normalize else centred_G
  td_normalize = normalize if td_normalize is None else td_normalize

  same_GGL = _prefix_equal(tokens_GL, mask_GL)  # [G, G, L+1]
  last_GL = mask_GL & ~jnp.pad(mask_GL[:, 1:], ((0, 0), (0, 1)))
  after_GGL = jnp.where(last_GL[:, None, :], same_GGL[..., 1:], same_GGL[..., :-1])
  # Before token 0 is the root, unless the root's branch is left to the GRPO term: then token 0 starts
  # after itself, and only the end-of-response edge of a one-token response can carry a TD term.
  first_GG1 = jnp.ones((g, g, 1), bool) if root_td else same_GGL[..., :1]
  before_GGL = jnp.concatenate([first_GG1, same_GGL[..., :-2]], axis=-1)

  def value(member_GGL):
    member_GGL = member_GGL.astype(jnp.float32)
    count_GL = jnp.sum(member_GGL, axis=1)
    return jnp.einsum("ijl,j->il", member_GGL, rewards_G) / jnp.maximum(count_GL, 1.0), count_GL

  v_after_GL, n_after_GL = value(after_GGL)
  v_before_GL, n_before_GL = value(before_GGL)
  branch_GL = n_after_GL < n_before_GL
  td_GL = v_after_GL - v_before_GL
  td_GL = td_GL / scale if td_normalize else td_GL
  adv_GL = group_G[:, None] + td_weight * jnp.where(branch_GL, td_GL, 0.0)
  # Equal rewards give exactly 0 (float rounding of the means must not be amplified by 1/eps).
  constant = jnp.max(rewards_G) == jnp.min(rewards_G)
  return jnp.where(mask_GL & ~constant, adv_GL, 0.0)


def group_prefix_tree(tokens_GL: jax.Array, mask_GL: jax.Array) -> dict[str, jax.Array]:
  """The flat prefix tree (trie) of one group, for inspection and for the flat-tree functions.

  Node 0 is the root (the prompt). Node 1 + j·(L+1) + u is the prefix o_j[:u+1] for u < len_j and the end
  of o_j for u = len_j, where j is the first response with that prefix; end nodes are the leaves, shared
  by identical responses. N = 1 + G·(L+1).

  Args:
    tokens_GL: response token ids [G, L], right-padded.
    mask_GL: 1 on response tokens [G, L], a prefix of each row.

  Returns:
    {"parent_N", "valid_N", "is_leaf_N", "node_GL" (node after token l, −1 on padding), "end_G" (leaf of
    each response)}. With rewards: `reward_N = segment_sum(r_G, end_G, N) / leaves`, `weight_N` = responses
    per leaf, then `prefix_tree_values(parent_N, reward_N, is_leaf_N=…, valid_N=…, weight_N=…)`.
  """
  mask_GL = mask_GL.astype(bool)
  g, length = tokens_GL.shape
  n = 1 + g * (length + 1)
  same_GGL = _prefix_equal(tokens_GL, mask_GL)
  first_GL = jnp.argmax(same_GGL, axis=1)  # first j sharing the prefix through u (i itself qualifies)
  u_L = jnp.arange(length + 1)
  ids_GL = 1 + first_GL * (length + 1) + u_L  # [G, L+1]
  len_G = jnp.sum(mask_GL, axis=-1)
  exists_GL = u_L[None] <= len_G[:, None]
  parent_GL = jnp.concatenate([jnp.zeros((g, 1), ids_GL.dtype), ids_GL[:, :-1]], axis=-1)
  scatter_GL = jnp.where(exists_GL, ids_GL, n)  # n: dropped
  parent_N = jnp.full(n, -1, jnp.int32).at[scatter_GL].set(parent_GL.astype(jnp.int32), mode="drop")
  valid_N = jnp.zeros(n, bool).at[0].set(True).at[scatter_GL].set(True, mode="drop")
  end_G = jnp.take_along_axis(ids_GL, len_G[:, None], axis=-1)[:, 0]
  is_leaf_N = jnp.zeros(n, bool).at[end_G].set(True)
  node_GL = jnp.where(mask_GL, ids_GL[:, :-1], -1)
  return {
    "parent_N": parent_N, "valid_N": valid_N, "is_leaf_N": is_leaf_N, "node_GL": node_GL, "end_G": end_G,
  }


def treerl_advantages(
  parent_N: jax.Array,
  reward_N: jax.Array,
  *,
  is_leaf_N: jax.Array | None = None,
  valid_N: jax.Array | None = None,
  global_weight: float = 1.0,
  local_weight: float = 1.0,
  weighting: str = "sqrt",
  leaf_baseline: str = "none",
) -> jax.Array:
  """TreeRL process advantage of every node (segment) of a rollout tree (EPTree), paper form.

    V(s)  = mean outcome of the leaves L(s) below s        (`prefix_tree_values`)
    GA(s) = V(s) − V(root)       LA(s) = V(s) − V(parent(s))
    R(s)  = (global_weight · GA(s) + local_weight · LA(s)) / sqrt(|L(s)|)
  Every token of segment s gets R(s) (`gather_to_tokens`). https://arxiv.org/abs/2506.11902; the form
  comes from secondary sources (formulas.md §2). A root gets 0. Several trees in one array (a forest) use
  their own roots; to share one baseline across TreeRL's M trees per prompt, give them a common root node.

  Open choices: `weighting="none"` drops the 1/sqrt(|L(s)|) down-weighting of shared prefixes.
  `leaf_baseline="loo"` first replaces each leaf reward by r_l − mean_{l'≠l} r_{l'} over the leaves of
  its tree, as THUDM/TreeRL's `leaf_normalize` does (0 baseline for a lone leaf).

  Args:
    parent_N: parent index per node [N], −1 for roots.
    reward_N: outcome reward per node [N]; read at leaves only.
    is_leaf_N: which nodes carry an outcome [N]; default: valid nodes without a valid child.
    valid_N: False on padding [N].
    global_weight: coefficient of GA.
    local_weight: coefficient of LA.
    weighting: one of `WEIGHTINGS`.
    leaf_baseline: one of `LEAF_BASELINES`.

  Returns:
    per-node advantages adv_N, f32, 0 on roots and padding.
  """
  if weighting not in WEIGHTINGS:
    raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")
  if leaf_baseline not in LEAF_BASELINES:
    raise ValueError(f"unknown leaf_baseline {leaf_baseline!r}; choose one of {LEAF_BASELINES}")
  n = parent_N.shape[0]
  valid_N = _valid(parent_N, valid_N)
  parent_N = jnp.where(valid_N, parent_N, -1).astype(jnp.int32)
  leaf_N = _leaves(parent_N, valid_N) if is_leaf_N is None else is_leaf_N.astype(bool) & valid_N
  root_N = root_ids(parent_N)
  reward_N = jnp.where(leaf_N, reward_N.astype(jnp.float32), 0.0)
  if leaf_baseline == "loo":
    tree_sum_N = jax.ops.segment_sum(reward_N, root_N, n)[root_N]
    tree_count_N = jax.ops.segment_sum(leaf_N.astype(jnp.float32), root_N, n)[root_N]
    others_N = jnp.maximum(tree_count_N - 1.0, 1.0)
    reward_N = reward_N - jnp.where(tree_count_N > 1, (tree_sum_N - reward_N) / others_N, 0.0)
  values_N, leaves_N = prefix_tree_values(parent_N, reward_N, is_leaf_N=leaf_N, valid_N=valid_N)
  ga_N = values_N - values_N[root_N]
  la_N = values_N - values_N[jnp.where(parent_N >= 0, parent_N, jnp.arange(n))]
  adv_N = global_weight * ga_N + local_weight * la_N
  if weighting == "sqrt":
    adv_N = adv_N / jnp.sqrt(jnp.maximum(leaves_N, 1.0))
  return jnp.where(valid_N & (parent_N >= 0), adv_N, 0.0)


def mc_step_values(returns_SK: jax.Array, mask_SK: jax.Array | None = None) -> jax.Array:
  """VinePPO Monte Carlo value of each step boundary: V̂(s_i) = (1/K) Σ_k R(rollout_k from s_i).

  https://arxiv.org/abs/2410.01679 (`_compute_mc_value` in McGill-NLP/VinePPO); a step with no rollout
  gets 0, as there. Also the Math-Shepherd soft label / OmegaPRM MC(s) when returns are 0/1 correctness.

  Args:
    returns_SK: return of rollout k started from the state before step i [..., S, K].
    mask_SK: 1 for rollouts that exist [..., S, K]; default all.

  Returns:
    values_S [..., S], f32.
  """
  returns_SK = returns_SK.astype(jnp.float32)
  mask_SK = jnp.ones_like(returns_SK) if mask_SK is None else mask_SK.astype(jnp.float32)
  count_S = jnp.sum(mask_SK, axis=-1)
  return jnp.sum(returns_SK * mask_SK, axis=-1) / jnp.maximum(count_S, 1.0)


def mc_step_advantages(
  values_S: jax.Array,
  step_rewards_S: jax.Array,
  *,
  known_S: jax.Array | None = None,
  step_mask_S: jax.Array | None = None,
  gamma: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
  """VinePPO step advantages A_i = r_i + γ V(s_{i+1}) − V(s_i), terminal value 0.

  Values not estimated (`known_S` False, e.g. past `max_step_for_value_estimation`) are filled from the
  end, V(s_i) = r_i + γ V(s_{i+1}), as VinePPO's episode generator does (γ = 1 there). Every token of step
  i gets A_i (`gather_to_tokens`). https://arxiv.org/abs/2410.01679, formulas.md §3.

  Args:
    values_S: V̂ of the state before each step [..., S] (index 0 is the query), e.g. `mc_step_values`.
    step_rewards_S: reward of each step [..., S]: 0, and the outcome at the last step.
    known_S: which values were estimated [..., S]; default all.
    step_mask_S: 1 on real steps [..., S], right-padded; the value after the last real step is 0.
    gamma: discount.

  Returns:
    (advantages_S, filled_values_S), f32, 0 on padded steps.
  """
  values_S = values_S.astype(jnp.float32)
  rewards_S = jnp.broadcast_to(step_rewards_S.astype(jnp.float32), values_S.shape)
  ones_S = jnp.ones(values_S.shape, bool)
  known_S = ones_S if known_S is None else jnp.broadcast_to(known_S, values_S.shape).astype(bool)
  step_S = ones_S if step_mask_S is None else jnp.broadcast_to(step_mask_S, values_S.shape).astype(bool)

  def back(next_value, xs):
    value, reward, known, step = xs
    filled = jnp.where(known, value, reward + gamma * next_value)
    filled = jnp.where(step, filled, 0.0)
    return filled, filled

  xs = tuple(jnp.moveaxis(x, -1, 0) for x in (values_S, rewards_S, known_S, step_S))
  _, filled_S = jax.lax.scan(back, jnp.zeros(values_S.shape[:-1]), xs, reverse=True)
  filled_S = jnp.moveaxis(filled_S, 0, -1)
  next_S = jnp.concatenate([filled_S[..., 1:], jnp.zeros_like(filled_S[..., :1])], axis=-1)
  adv_S = jnp.where(step_S, rewards_S + gamma * next_S - filled_S, 0.0)
  return adv_S, filled_S
