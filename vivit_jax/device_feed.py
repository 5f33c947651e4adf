"""Feeding the devices: batches go to the devices ahead of the step that needs them.

`DeviceFeed` takes each process's local numpy batches, assembles the global `jax.Array`s
(`sharding.global_batch`) in a background thread and keeps `dataset_configs.prefetch_to_device`
of them on the devices, so the host→device copy of batch n + 1 overlaps step n and the loop
only waits when the input pipeline itself is behind. Batches already on the devices (a
`jax.Array` per key: the `synthetic_device` source) pass through untouched.

`next_batch(devices_busy)` also reports how long the devices sat idle waiting for that batch:
the time from when they finished every step given to them (polled every millisecond through
`devices_busy`) to when the batch arrived. Waiting while the devices still had queued work
costs nothing, and is not counted; this is the trainer's `data_wait_fraction`.
"""
import queue
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from vivit_jax import sharding

_END = object()
POLL_SECONDS = 1e-3


def to_device(local: Mapping[str, Any], mesh: Mesh, dtypes: Mapping[str, Any]
              ) -> dict[str, jax.Array]:
  """One local batch → the global batch on the devices, keys and dtypes as `dtypes` says.

  Pixels must already be uint8 where uint8 is asked for: casting normalised floats would
  silently make every clip black.
  """
  if all(isinstance(local.get(k), jax.Array) for k in dtypes):
    return {k: local[k] for k in dtypes}
  out = {}
  for key, dtype in dtypes.items():
    value = np.asarray(local[key])
    if np.dtype(dtype) == np.uint8 and value.dtype != np.uint8:
      raise TypeError(f"batch['{key}'] is {value.dtype}, but data_dtype_str='uint8' expects "
                      "uint8 pixels in [0, 255] from the data source (set data_dtype_str="
                      "'float32' for a source that normalises clips itself)")
    out[key] = value.astype(dtype, copy=False)
  return sharding.global_batch(out, mesh)


class DeviceFeed(Iterator[dict[str, jax.Array]]):
  """Global device batches from local ones, `size` of them already sent (see module doc).

  `size=0` sends each batch when it is asked for, in the calling thread. Keys missing from
  `dtypes` are dropped. An error of the input pipeline is raised by the `next` that would have
  returned its batch. Close it (or use it as a context manager) to stop the thread early.
  """

  def __init__(self, local_batches: Iterable[Mapping[str, Any]], mesh: Mesh, size: int,
               dtypes: Mapping[str, Any]):
    self._local = iter(local_batches)
    self._put = lambda local: to_device(local, mesh, dtypes)  # noqa: E731
    self._size = int(size)
    self._stop = threading.Event()
    self._thread = None
    if self._size > 0:
      self._queue: queue.Queue = queue.Queue(maxsize=self._size)
      self._thread = threading.Thread(target=self._fill, name="vivit_device_feed", daemon=True)
      self._thread.start()

  def _fill(self) -> None:
    try:
      for local in self._local:
        if not self._offer(self._put(local)):
          return
      self._offer(_END)
    except BaseException as e:  # pylint: disable=broad-except  (re-raised by next())
      self._offer(e)

  def _offer(self, item) -> bool:
    """Queues `item` once there is room, unless the feed is closed first (then False)."""
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def next_batch(self, devices_busy: Callable[[], bool] | None = None
                 ) -> tuple[dict[str, jax.Array], float]:
    """The next batch and the seconds the devices were idle waiting for it."""
    idle_now = lambda: devices_busy is None or not devices_busy()  # noqa: E731
    if self._thread is None:  # no prefetch: the wait is the copy itself
      t0, idle = time.perf_counter(), idle_now()
      item = self._put(next(self._local))
      return item, time.perf_counter() - t0 if idle else 0.0
    idle_since = None
    try:
      item = self._queue.get_nowait()
    except queue.Empty:
      while True:
        if idle_since is None and idle_now():
          idle_since = time.perf_counter()
        try:
          item = self._queue.get(timeout=POLL_SECONDS)
          break
        except queue.Empty:
          continue
    idle = 0.0 if idle_since is None else time.perf_counter() - idle_since
    if item is _END:
      self._stop.set()
      raise StopIteration
    if isinstance(item, BaseException):
      self._stop.set()
      raise item
    return item, idle

  def __next__(self) -> dict[str, jax.Array]:
    return self.next_batch()[0]

  def close(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=10)

  def __enter__(self) -> "DeviceFeed":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
