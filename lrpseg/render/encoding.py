"""PNG encoding off the compute thread: a small thread pool that a job hands its finished pixels to.

Pillow's zlib encoder releases the GIL, so while the pool encodes one job's pictures the
calling thread goes on with the job's masks and metrics (and the device with its next kernels).
`Pending` collects one job's encodes; `resolve` waits for all of them and re-raises the first
error, so a job ends only with every picture encoded (or fails).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from lrpseg.render.png import encode_png

DEFAULT_THREADS = 2


class PngEncoder:
    """A small pool of encoder threads; `threads` 0 encodes in the calling thread (no overlap)."""

    def __init__(self, threads: int = DEFAULT_THREADS) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="lrpseg-png") if threads > 0 else None

    def submit(self, make: Callable[[], bytes]) -> Future[bytes]:
        if self._pool is None:
            done: Future[bytes] = Future()
            try:
                done.set_result(make())
            except Exception as exc:  # handed to resolve(), which re-raises it
                done.set_exception(exc)
            return done
        return self._pool.submit(make)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class Pending:
    """One job's artifacts: bytes already made, and PNGs still being encoded by a PngEncoder."""

    def __init__(self, encoder: PngEncoder | None) -> None:
        self.encoder = encoder or PngEncoder(0)
        self.ready: dict[str, bytes] = {}
        self.futures: dict[str, Future[bytes]] = {}

    def png(self, name: str, pixels: np.ndarray) -> None:
        """Encode uint8/uint16 pixels (see encode_png) as artifact `name`, in the pool."""
        self.futures[name] = self.encoder.submit(lambda: encode_png(pixels))

    def later(self, name: str, make: Callable[[], bytes]) -> None:
        """Any other encoding that only needs the CPU (a matplotlib plot), in the pool."""
        self.futures[name] = self.encoder.submit(make)

    def __setitem__(self, name: str, data: bytes) -> None:
        self.ready[name] = data

    def resolve(self) -> dict[str, bytes]:
        """Every artifact's bytes, once all encodes are done; the first failure is raised (after
        waiting for the rest, so no encode outlives its job)."""
        errors: list[BaseException] = []
        out = dict(self.ready)
        for name, future in self.futures.items():
            try:
                out[name] = future.result()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return out
