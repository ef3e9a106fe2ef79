"""L1Penalty and L2Penalty on FSDP2-sharded parameters (2 gloo processes): the value is the one-process
penalty of the whole parameters on every rank, and each shard's gradient is the plain one."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from lmforge.plugins.regularizers.l1_penalty import L1Penalty
from lmforge.plugins.regularizers.l2_penalty import L2Penalty


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    # 5 output rows: dim 0 does not split evenly over 2 ranks (FSDP2 pads the second shard).
    return nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 3))


def _rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        results = {}
        for plugin in (L2Penalty(weight=0.5), L1Penalty(weight=0.5)):
            model = tiny_model()
            plugin.setup(SimpleNamespace(backbone=model))
            mesh = init_device_mesh("cpu", (2,))
            for layer in model:
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
            value = plugin.loss(SimpleNamespace(backbone=model))  # what a loss hook reads of the step: ctx.backbone
            value.backward()
            grads = {n: p.grad.full_tensor() for n, p in model.named_parameters() if p.grad is not None}
            results[type(plugin).__name__] = (float(value), grads)
        torch.save(results, Path(out) / f"rank{rank}.pt")
        dist.barrier()  # no rank tears gloo down while the other still talks to it (that aborts the process)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_penalties_on_fsdp2_shards_match_one_process(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    model = tiny_model()
    weights = {"0.weight": model[0].weight.detach(), "2.weight": model[2].weight.detach()}  # not biases or norms
    expected = {
        "L2Penalty": (0.5 * sum(float(w.pow(2).sum()) for w in weights.values()),
                      {n: 0.5 * 2 * w for n, w in weights.items()}),
        "L1Penalty": (0.5 * sum(float(w.abs().sum()) for w in weights.values()),
                      {n: 0.5 * torch.sign(w) for n, w in weights.items()}),
    }
    for name, (value, grads) in expected.items():
        for rank in ranks:
            assert rank[name][0] == pytest.approx(value, rel=1e-6)  # every rank: the whole parameters' penalty
            assert rank[name][1].keys() == grads.keys()  # no gradient into biases and norms
            for param, grad in grads.items():
                torch.testing.assert_close(rank[name][1][param], grad, rtol=0, atol=1e-7)
