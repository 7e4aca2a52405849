"""Where the training rows live (dgc_cli.rows): on the device when they fit, else in host memory
with batches sent over. Without a GPU here, the host path runs on the CPU (no pinning) and the
GPU's size decision is checked against a stand-in for torch.cuda.mem_get_info."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgc_cli import DGC
from dgc_cli.rows import RESIDENT_SHARE, Rows, fits_on_device


def test_host_rows_give_the_same_batches_as_resident_rows():
    x = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    resident, host = Rows(x, "cpu", resident=True), Rows(x, "cpu", resident=False)
    assert resident.data.data_ptr() == torch.as_tensor(x).data_ptr()  # the array itself, no copy
    assert len(host) == 40 and not host.resident
    batches = []
    for idx in (torch.tensor([3, 0, 39]), torch.tensor([5, 5]), torch.arange(10), torch.tensor([7])):
        batch = host.take(idx)
        torch.testing.assert_close(batch, resident.take(idx, idx), rtol=0, atol=0)
        batches.append((idx, batch))
    for idx, batch in batches:  # staging buffers are reused: earlier batches must not change
        torch.testing.assert_close(batch, torch.as_tensor(x)[idx], rtol=0, atol=0)
    torch.testing.assert_close(host.slice(35, 45), torch.as_tensor(x)[35:], rtol=0, atol=0)


def test_a_gpu_keeps_the_rows_when_they_take_at_most_half_its_free_memory(monkeypatch):
    free = {"bytes": 1000}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 4000))
    cuda = torch.device("cuda")
    assert fits_on_device(int(RESIDENT_SHARE * 1000), cuda)
    assert not fits_on_device(int(RESIDENT_SHARE * 1000) + 1, cuda)
    free["bytes"] = 10
    assert not fits_on_device(6, cuda)
    assert fits_on_device(10**12, torch.device("cpu"))  # the CPU trains on the array itself


def test_views_have_their_own_staging_buffers():
    x = np.arange(64 * 2, dtype=np.float32).reshape(64, 2)
    host = Rows(x, "cpu", resident=False)
    a, b = host.view(), host.view()
    assert a.data is host.data and b.data is host.data  # the rows themselves are shared
    a.take(torch.arange(8))
    b.take(torch.arange(8))
    assert a._staging[0].data_ptr() != b._staging[0].data_ptr() and not host._staging


def test_training_from_host_rows_matches_resident_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    x[:150] += 2.5
    y = np.r_[np.zeros(150), np.ones(150)].astype(int)
    params = dict(n_clusters=2, epochs=3, pretrain_epochs=2, batch_size=64,  # init ygmm
                  device="cpu", random_state=4)
    on_device = DGC(**params).fit(x, y)
    from_host = DGC(**params, rows_on_device=False).fit(x, y)
    assert on_device.rows_on_device_ and not from_host.rows_on_device_
    np.testing.assert_array_equal(from_host.predict_proba(x, y), on_device.predict_proba(x, y))
    assert from_host.init_report_ == on_device.init_report_
    # runs side by side, each with its own staging buffers (threads once shared one pair)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = dict(params, init="gmm", n_init=2, rows_on_device=False)
        alone = DGC(**runs).fit(x, y)
        side_by_side = DGC(**runs, n_jobs=2).fit(x, y)
    finally:
        torch.set_num_threads(threads)
    assert side_by_side.init_report_ == alone.init_report_
    with pytest.raises(ValueError, match="rows_on_device='yes'"):
        DGC(**params, rows_on_device="yes").fit(x, y)
