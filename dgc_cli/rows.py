"""Where the training rows live while a model trains.

On the CPU they are the caller's array itself (no copy). On a GPU they move there once when
they fit in a share of its free memory; otherwise they stay in host memory, and each batch is
gathered into one of two pinned staging buffers and copied over without blocking the host, so
the gather of the next batch overlaps the copy (and the step) of this one.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

RESIDENT_SHARE = 0.5  # rows stay on a GPU when they take at most this share of its free memory


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` of rows should live on ``device``: always on the CPU (the rows are the
    array itself) and on MPS (memory is unified); on CUDA, if they take at most
    ``RESIDENT_SHARE`` of the free memory, leaving the rest to activations and the optimiser."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= RESIDENT_SHARE * free


class Rows:
    """Rows of x for training on ``device``: ``take(host_idx, idx)`` and ``slice(i, j)`` return
    batches there.

    ``resident`` None decides by ``fits_on_device``; False keeps the rows in host memory (on
    the CPU this exercises the same staging path, without pinning, for tests). The staging
    buffers belong to one training loop at a time: runs side by side each take a ``view()``.
    """

    def __init__(self, x, device, resident: bool | None = None):
        self.device = torch.device(device)
        host = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        if resident is None:
            resident = fits_on_device(host.nelement() * host.element_size(), self.device)
        self.resident = resident
        self.data = host.to(self.device) if resident else host.cpu()
        self._reset()

    def _reset(self):
        self._pin = not self.resident and self.device.type == "cuda"
        self._staging: list[torch.Tensor] = []
        self._copied = [torch.cuda.Event() for _ in range(2)] if self._pin else []
        self._turn = 0

    def view(self) -> Rows:
        """The same rows with staging buffers of their own (for another thread)."""
        twin = copy.copy(self)
        twin._reset()
        return twin

    def __len__(self) -> int:
        return len(self.data)

    def numpy(self) -> np.ndarray:
        return self.data.cpu().numpy()

    def take(self, host_idx: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The rows at the positions ``host_idx`` (on the host) or ``idx`` (the same positions
        on the training device, if at hand) on the training device."""
        if self.resident:
            return self.data[idx if idx is not None else host_idx.to(self.device)]
        buffer = self._buffer(len(host_idx))
        torch.index_select(self.data, 0, host_idx.cpu(), out=buffer)
        return self._send(buffer)

    def slice(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` on the training device."""
        if self.resident:
            return self.data[start:stop]
        part = self.data[start:stop]
        return self._send(self._buffer(len(part)).copy_(part))

    def _buffer(self, n: int) -> torch.Tensor:
        """The staging buffer of this turn, ``n`` rows long, once its last copy has finished."""
        if len(self._staging) < 2 or len(self._staging[self._turn]) < n:
            shape = (n, *self.data.shape[1:])
            fresh = torch.empty(shape, dtype=self.data.dtype, pin_memory=self._pin)
            if len(self._staging) < 2:
                self._staging.append(fresh)
                self._turn = len(self._staging) - 1
            else:
                self._staging[self._turn] = fresh
        if self._pin:
            self._copied[self._turn].synchronize()  # the copy that last read this buffer
        return self._staging[self._turn][:n]

    def _send(self, buffer: torch.Tensor) -> torch.Tensor:
        turn, self._turn = self._turn, 1 - self._turn
        if not self._pin:  # a copy: the buffer is refilled two batches on
            return buffer.clone() if self.device.type == "cpu" else buffer.to(self.device)
        out = buffer.to(self.device, non_blocking=True)
        # the copy runs on the destination's stream, which need not be the current device's
        self._copied[turn].record(torch.cuda.current_stream(self.device))
        return out


def as_rows(x) -> Rows:
    """``x`` as Rows: already Rows, or a tensor, resident where it is."""
    if isinstance(x, Rows):
        return x
    x = torch.as_tensor(x)
    return Rows(x, x.device, resident=True)
