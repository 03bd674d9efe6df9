"""Checkpoints of a training run: train state, data-iterator state and config, through Orbax.

One `Checkpointer` per run directory wraps an `orbax.checkpoint.CheckpointManager` whose steps hold
three items::

  DIR/<step>/state/    the train state pytree (StandardSave: OCDBT + zarr, with metadata)
  DIR/<step>/data/     the data iterator's JSON-able state, e.g. {"epoch": 1, "index": 123}
  DIR/<step>/config/   the run's JSON-able config (optional)

Atomicity (orbax-checkpoint 0.12.8). A save writes into `DIR/<step>.orbax-checkpoint-tmp-<n>/`. Once
every item is written, the finalize step writes `commit_success.txt` into that directory and renames
it to `DIR/<step>/` (`AtomicRenameTemporaryPath`, the default for local and POSIX file systems; on
GCS Orbax uses `CommitFileTemporaryPath`, where the directory keeps its final name and only
`commit_success.txt` marks completion). A step counts as complete only if Orbax's own check
(`orbax.checkpoint.step.is_path_finalized`) accepts it; on a local disk that means a directory named
`<step>` without the tmp suffix, so keep other numeric folders out of DIR. A save killed half-way
(even by SIGKILL) leaves at most a `*.orbax-checkpoint-tmp-*` directory, which `latest_step`,
`all_steps` and `restore` never see and which the manager deletes when a writable `Checkpointer` is
opened (`cleanup_tmp_directories`): open one writer per directory and give readers `read_only=True`.
Retention (`keep`) deletes old steps only after the new step is finalized. Orbax's
`CheckpointManager.latest_step()` already lists a step whose async save is still in flight; this
wrapper's `latest_step` does not.

Async saves and donation. `save` returns after the blocking phase: Orbax copies every `jax.Array` of
the state to host memory (`copy_to_host_async` on each shard, then `np.asarray`, which waits) before
returning, and writes files from those host copies in a background thread. So the caller may update
or donate the state's device buffers as soon as `save` returns. (On the CPU backend the host copy is
a zero-copy view that holds a reference to the device buffer; XLA then refuses the donation and
allocates a new output buffer, so the saved values stay intact there too.) Leaves that are NumPy
arrays are read in the background: do not mutate them in place before `wait()`. The JSON items are
copied during `save`. The blocking phase also waits for the previous save to finish and for the
computation still producing `state` (async dispatch); for a ready 32 MiB state on CPU it takes about
20 ms.

Self-verification. Every step also holds a fourth item, `DIR/<step>/checksums/`: a SHA-256 of each
state leaf (its dtype, shape and bytes, by leaf name), of the data state and of the config, computed
from the values handed to `save`. `restore` recomputes them from what it read, checks that every
floating-point leaf is finite, and treats a step whose files cannot be read (truncated or zeroed data,
an emptied manifest, a missing `state/_METADATA`, an empty or partial step folder) the same way: it
warns (`DamagedCheckpointWarning`, naming the step and the reason) and falls back to the newest intact
step, which keep-N (N >= 2) guarantees. A writable `Checkpointer` then moves the damaged newer steps
aside to `DIR/damaged-<step>-<time>/` (never deleted; Orbax ignores non-numeric names), so the run
saves those steps afresh. A leaf whose shape or dtype differs from the target is not damage but a
changed model: that still raises `ValueError` without falling back. Steps written before checksums
existed are checked for finiteness only. Leaves split over several processes (not readable whole by
one) are left out of the checksums; the finite check covers them. `save` hashes a host copy of each leaf
before it returns (SHA-256, about 1 GB/s per core): negligible for the models here, seconds for GB states.

Paths. The directory is an `etils.epath.Path`, as Orbax's own: a local folder or a URI such as
`gs://bucket/run/checkpoints`, which Orbax writes through TensorStore's GCS driver (and the commit-file
finalization above). The writer lock below is a local file lock, so a remote folder has none: run one
writer per remote folder.

Logging. Orbax logs ~45 INFO lines per save through absl. Unless `quiet_logs=False`, a
`Checkpointer` installs (once, idempotently) a filter on the `absl` logger that drops INFO/DEBUG
records emitted from Orbax's own modules; warnings and errors pass, and nothing else is touched.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from w2s_jax.atomic_file import is_remote

_STATE, _DATA, _CONFIG, _SUMS = "state", "data", "config", "checksums"


class DamagedCheckpointWarning(UserWarning):
  """A checkpoint step failed verification at restore; the message names the step and the reason."""


class DamagedCheckpointError(RuntimeError):
  """A checkpoint step cannot be trusted: unreadable, a checksum mismatch, or non-finite values.

  Attributes:
    step: the step.
    reason: what was wrong, in words.
  """

  def __init__(self, directory: epath.Path, step: int, reason: str):
    self.step, self.reason = step, reason
    super().__init__(f"checkpoint step {step} in {directory} is damaged: {reason}")


class _DropOrbaxInfo(logging.Filter):
  """Drops records below WARNING that come from Orbax's modules."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def quiet_orbax_logs() -> None:
  """Silences Orbax's INFO logs (absl logger filter); idempotent, other loggers untouched."""
  absl_logger = logging.getLogger("absl")
  if not any(isinstance(f, _DropOrbaxInfo) for f in absl_logger.filters):
    absl_logger.addFilter(_DropOrbaxInfo())


def checkpoint_dir(directory: epath.PathLike) -> epath.Path:
  """`directory` as the epath Orbax is given: a local folder made absolute, a URI (`gs://…`) unchanged."""
  path = epath.Path(directory)
  return path if is_remote(path) else path.absolute()


def _writer_lock(directory: epath.Path) -> Any:
  """An exclusive lock on `.<directory name>.writer.lock` beside `directory` (inside it, step listings
  would see it), held while a writer is open: a second writer of the
  same folder (e.g. a rerun started while a preempted run still finishes its save) would otherwise delete
  the first one's in-flight `*.orbax-checkpoint-tmp` folder when Orbax cleans up at start. The kernel drops
  the lock when its process dies, even on SIGKILL, so it is never left behind."""
  directory.mkdir(parents=True, exist_ok=True)
  f = open(directory.parent / f".{directory.name}.writer.lock", "a+")  # noqa: SIM115 (held until close())
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip() or "unknown"
    f.close()
    raise RuntimeError(
      f"{directory} is being written by another process (pid {holder}); wait for it to exit (a preempted "
      "run finishes its checkpoint first) or stop it, then rerun"
    ) from None
  f.seek(0)
  f.truncate()
  f.write(str(os.getpid()))
  f.flush()
  return f


class Checkpointer:
  """Saves and restores (train state, data-iterator state, config) by step in one directory.

  Example::

    with Checkpointer(workdir / "checkpoints", keep=3) as ckpt:
      if (step := ckpt.latest_step()) is not None:
        state, data_state, _ = ckpt.restore(abstract_state)
      ...
      ckpt.save(step, state, data_state=it.get_state(), config=config.to_dict())
    # leaving the block waits for pending saves

  Args:
    directory: the checkpoint root (created if missing, unless `read_only`).
    keep: number of most recent steps to keep; None keeps all.
    async_save: write in a background thread after the state is copied to host.
    read_only: never save nor clean up temporary directories (for readers of a live run).
    quiet_logs: silence Orbax's INFO logs (see `quiet_orbax_logs`).
  """

  def __init__(
    self,
    directory: epath.PathLike,
    *,
    keep: int | None = 3,
    async_save: bool = True,
    read_only: bool = False,
    quiet_logs: bool = True,
  ):
    if quiet_logs:
      quiet_orbax_logs()
    self._directory = checkpoint_dir(directory)
    self._read_only = read_only
    # No file locks on object stores (gs://): one writer per remote folder is the caller's to ensure.
    remote = is_remote(self._directory)
    self._lock = None if read_only or remote or jax.process_index() != 0 else _writer_lock(self._directory)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=None if read_only else keep,
      save_interval_steps=0 if read_only else 1,
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=not read_only,
      read_only=read_only,
      create=not read_only,
    )
    handlers = {
      _STATE: ocp.StandardCheckpointHandler(),
      _DATA: ocp.JsonCheckpointHandler(),
      _CONFIG: ocp.JsonCheckpointHandler(),
      _SUMS: ocp.JsonCheckpointHandler(),
    }
    try:
      self._manager = ocp.CheckpointManager(self._directory, item_handlers=handlers, options=options)
    except BaseException:
      if self._lock is not None:
        self._lock.close()  # closing the file releases the lock
      raise
    self._closed = False
    self.restored_step: int | None = None  # the step the last `restore` returned

  @property
  def directory(self) -> epath.Path:
    """The checkpoint root directory."""
    return self._directory

  def all_steps(self) -> list[int]:
    """Returns the steps of all complete (finalized) checkpoints, ascending."""
    if self._read_only:
      self._manager.reload()  # a live writer may have added steps since
    return sorted(s for s in self._manager.all_steps() if self._is_complete(s))

  def latest_step(self) -> int | None:
    """Returns the newest complete checkpoint's step, or None; in-flight saves do not count."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(
    self,
    step: int,
    state: Any,
    *,
    data_state: dict[str, Any],
    config: dict[str, Any] | None = None,
    force: bool = False,
  ) -> bool:
    """Starts saving `state`, `data_state` and `config` as `step`; waits for any previous save.

    Returns once the state is on host (see the module docstring); call `wait()` to block until
    the checkpoint is finalized.

    Args:
      step: the step number, the checkpoint's name.
      state: a pytree of arrays (e.g. a `TrainState`).
      data_state: the data iterator's JSON-able state.
      config: the run's JSON-able config, or None to store none.
      force: save even if Orbax's policy would skip the step (a step not newer than the latest).

    Returns:
      True if a save was started; False if `step` exists already (in flight or done; never
      overwritten) or the policy skipped it.

    Raises:
      TypeError: `data_state` or `config` is not JSON-serializable.
    """
    if step in self._manager.all_steps():
      return False
    data_state, config = _json_copy(data_state), _json_copy(config)
    sums = {"state": state_checksums(state), "data": _json_sum(data_state), "config": _json_sum(config)}
    items = {_STATE: ocp.args.StandardSave(state), _DATA: ocp.args.JsonSave(data_state),
             _SUMS: ocp.args.JsonSave(sums)}
    if config is not None:
      items[_CONFIG] = ocp.args.JsonSave(config)
    return bool(self._manager.save(step, args=ocp.args.Composite(**items), force=force))

  def restore(
    self, abstract_state: Any, step: int | None = None, *, check_finite: bool = True
  ) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """Restores a verified checkpoint onto the shapes, dtypes and shardings of `abstract_state`.

    With `step=None` the newest step that passes verification is restored; each newer damaged step
    is warned about (`DamagedCheckpointWarning`) and, by a writable `Checkpointer`, moved aside. The
    step restored is `self.restored_step` afterwards.

    Args:
      abstract_state: a pytree like the saved state whose leaves are `jax.ShapeDtypeStruct`s
        (with the target `sharding`) or arrays (their shardings are used).
      step: the step to restore (no fallback: damage raises); None for the newest intact one.
      check_finite: also require every floating-point leaf of the state to be finite.

    Returns:
      (state, data_state, config); config is None if none was saved.

    Raises:
      FileNotFoundError: no complete checkpoint (for `step`) in the directory.
      DamagedCheckpointError: `step` (or, for None, every step) failed verification.
      ValueError: a leaf's shape or dtype differs from the checkpoint's, or the trees differ; the
        message names the leaf.
    """
    steps = self.all_steps()
    if step is None and not steps:
      raise FileNotFoundError(f"No complete checkpoint in {self._directory}.")
    if step is not None and step not in steps:
      raise FileNotFoundError(
        f"No complete checkpoint for step {step} in {self._directory}; complete steps: {steps}."
      )
    target = jax.tree.map(_abstract_leaf, abstract_state)
    damaged: list[DamagedCheckpointError] = []
    for candidate in [step] if step is not None else reversed(steps):
      try:
        restored = self._restore_step(target, candidate, check_finite)
      except DamagedCheckpointError as e:
        if step is not None:
          raise
        damaged.append(e)
        warnings.warn(f"{e}; falling back to the previous step", DamagedCheckpointWarning, stacklevel=2)
        continue
      self._set_aside([e.step for e in damaged])
      self.restored_step = candidate
      return restored
    reasons = "; ".join(f"step {e.step}: {e.reason}" for e in damaged)
    raise DamagedCheckpointError(self._directory, steps[0], f"no intact step is left ({reasons})")

  def _restore_step(
    self, target: Any, step: int, check_finite: bool
  ) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """Restores one step and verifies it; unreadable files and failed checks raise DamagedCheckpointError."""
    where = self._directory / str(step)
    try:
      metadata = self._manager.item_metadata(step)
      stored_tree = metadata[_STATE].tree
    except Exception as e:  # an empty step folder, a deleted or emptied _METADATA, ...
      raise DamagedCheckpointError(self._directory, step, f"unreadable metadata ({_brief(e)})") from e
    _check_compatible(stored_tree, target, where)  # a changed model is not damage: no fallback
    items = {_STATE: ocp.args.StandardRestore(target), _DATA: ocp.args.JsonRestore()}
    optional = [k for k in (_CONFIG, _SUMS) if (where / k).is_dir()]
    items.update({k: ocp.args.JsonRestore() for k in optional})
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # truncated or zeroed data files, an emptied manifest, ...
      raise DamagedCheckpointError(self._directory, step, f"unreadable files ({_brief(e)})") from e
    state, data = restored[_STATE], dict(restored[_DATA])
    config = dict(restored[_CONFIG]) if _CONFIG in optional else None
    sums = dict(restored[_SUMS]) if _SUMS in optional else None
    if reason := _verify(state, data, config, sums, check_finite):
      raise DamagedCheckpointError(self._directory, step, reason)
    return state, data, config

  def _set_aside(self, steps: list[int]) -> None:
    """Moves damaged steps to `damaged-<step>-<time>/` (writer, lead process only) so they are saved anew."""
    if not steps or self._read_only or jax.process_index() != 0:
      return
    for step in steps:
      aside = self._directory / f"damaged-{step}-{time.time_ns()}"
      (self._directory / str(step)).rename(aside)
      warnings.warn(f"moved the damaged checkpoint step {step} to {aside}", DamagedCheckpointWarning,
                    stacklevel=3)
    self._manager.reload()

  def wait(self) -> None:
    """Blocks until pending async saves are finalized (and raises their errors)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases Orbax's resources; idempotent."""
    if not self._closed:
      self._closed = True
      try:
        self._manager.close()
      finally:
        if self._lock is not None:
          fcntl.flock(self._lock, fcntl.LOCK_UN)
          self._lock.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()

  def _is_complete(self, step: int) -> bool:
    return ocp.step.is_path_finalized(self._directory / str(step))


def _brief(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def _host_value(x: Any) -> np.ndarray | None:
  """The whole value of a leaf on this host, or None when it is split over several processes."""
  if isinstance(x, jax.Array):
    if x.is_fully_addressable:
      return np.asarray(jax.device_get(x))
    return np.asarray(x.addressable_data(0)) if x.is_fully_replicated else None
  return np.asarray(x)


def state_checksums(tree: Any) -> dict[str, str]:
  """SHA-256 of each leaf's dtype, shape and bytes, by leaf name (leaves split over processes omitted)."""
  sums = {}
  for name, leaf in _flat_by_name(tree).items():
    value = _host_value(leaf)
    if value is not None:
      h = hashlib.sha256(f"{value.dtype.name}{value.shape}".encode())
      h.update(np.ascontiguousarray(value).reshape(-1).view(np.uint8))
      sums[name] = h.hexdigest()
  return sums


def _json_sum(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _verify(
  state: Any, data: dict[str, Any], config: dict[str, Any] | None, sums: dict[str, Any] | None,
  check_finite: bool,
) -> str | None:
  """What is wrong with a restored step (a checksum mismatch or a non-finite leaf), or None."""
  if sums is not None:
    if sums.get("data") != _json_sum(data):
      return f"the data state {data} does not match its checksum (edited or corrupted)"
    if sums.get("config") != _json_sum(config):
      return "the config does not match its checksum (edited or corrupted)"
    stored = sums.get("state", {})
    bad = [k for k, v in state_checksums(state).items() if k in stored and stored[k] != v]
    if bad:
      return f"{len(bad)} state leaves do not match their checksums, first {bad[0]!r}"
  if check_finite:
    for name, leaf in _flat_by_name(state).items():
      if jnp.issubdtype(leaf.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(leaf))):
        return f"state leaf {name!r} holds non-finite values"
  return None


def _json_copy(obj: Any) -> Any:
  """Returns a deep copy through JSON, so later mutation by the caller cannot race the writer."""
  return json.loads(json.dumps(obj))


def _abstract_leaf(x: Any) -> Any:
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  return jax.ShapeDtypeStruct(np.shape(x), np.result_type(x), sharding=getattr(x, "sharding", None))


def _key_name(key: Any) -> str:
  for attr in ("name", "key", "idx"):  # GetAttrKey, DictKey / FlattenedIndexKey, SequenceKey
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _flat_by_name(tree: Any) -> dict[str, Any]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _check_compatible(stored_tree: Any, target: Any, where: epath.Path) -> None:
  """Raises ValueError naming the first leaf whose structure, shape or dtype differs."""
  stored, wanted = _flat_by_name(stored_tree), _flat_by_name(target)
  if missing := [name for name in wanted if name not in stored]:
    raise ValueError(f"Leaf {missing[0]!r} of the target state is not in the checkpoint {where}.")
  if extra := [name for name in stored if name not in wanted]:
    raise ValueError(f"Checkpoint {where} has leaf {extra[0]!r}, absent from the target state.")
  for name, want in wanted.items():
    have = stored[name]
    have_shape, have_dtype = tuple(getattr(have, "shape", ())), getattr(have, "dtype", None)
    if have_shape != tuple(want.shape) or np.dtype(have_dtype) != np.dtype(want.dtype):
      raise ValueError(
        f"Leaf {name!r}: checkpoint {where} has shape {have_shape} dtype {np.dtype(have_dtype)},"
        f" the target wants shape {tuple(want.shape)} dtype {np.dtype(want.dtype)}."
      )
