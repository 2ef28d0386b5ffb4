"""Optimisers for the student: Adam for the MLPs, and for the hash table instant-ngp's variant
that leaves entries with an exactly-zero gradient untouched (fused in C++ on the CPU)."""

from __future__ import annotations

import torch


class HashTableAdam(torch.optim.Optimizer):
    """Adam that skips parameters whose gradient is exactly zero (instant-ngp's hash-table rule).

    On CPU float32 tensors it runs the fused kernel of :mod:`n3f.render.cpu_kernels`; elsewhere an
    equivalent masked PyTorch update. Same ``state_dict`` layout as ``torch.optim.Adam``
    (``step``, ``exp_avg``, ``exp_avg_sq``), so checkpoints round-trip.

    Args:
        params: parameters (the hash tables).
        lr, betas, eps: Adam's hyper-parameters.
    """

    def __init__(self, params, lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-15):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        from n3f.render.cpu_kernels import hashgrid_module

        loss = closure() if closure is not None else None
        module = hashgrid_module()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = int(state["step"])
                grad = p.grad.contiguous()
                if module is not None and p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous():
                    module.sparse_adam_step(p, grad, state["exp_avg"], state["exp_avg_sq"], group["lr"], b1, b2, group["eps"], step)
                    continue
                touched = grad != 0
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.copy_(torch.where(touched, b1 * m + (1 - b1) * grad, m))
                v.copy_(torch.where(touched, b2 * v + (1 - b2) * grad * grad, v))
                c1, c2 = 1 - b1**step, 1 - b2**step
                update = group["lr"] / c1 * m / ((v / c2).sqrt() + group["eps"])
                p.sub_(torch.where(touched, update, torch.zeros_like(update)))
        return loss


def student_optimizers(model: torch.nn.Module, lr: float) -> list[torch.optim.Optimizer]:
    """Adam (instant-ngp's betas and eps) for the MLPs and HashTableAdam for hash tables."""
    tables = [p for name, p in model.named_parameters() if name.endswith("encoding.table")]
    others = [p for name, p in model.named_parameters() if not name.endswith("encoding.table")]
    return [HashTableAdam(tables, lr=lr), torch.optim.Adam(others, lr=lr, betas=(0.9, 0.99), eps=1e-15)]
