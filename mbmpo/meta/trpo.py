"""Pure numerical pieces of TRPO: conjugate gradient, the natural step size, backtracking line search."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def conjugate_gradient(fvp: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, tol: float = 1e-10) -> Tensor:
    """Approximately solve F x = b for symmetric positive-definite F given only x -> F x.

    b: P, or B x P for B independent systems at once (fvp maps B x P -> B x P, each row its own F; each row
    takes its own step lengths, and a row that is solved exactly, b = 0 included, stays put).
    """
    dot = lambda u, v: (u * v).sum(-1, keepdim=True)  # noqa: E731
    ratio = lambda num, den: torch.where(den != 0, num / torch.where(den != 0, den, 1.0), 0.0)  # noqa: E731
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = dot(r, r)
    for _ in range(iters):
        if bool((rr < tol).all()):
            break
        fp = fvp(p)
        step = ratio(rr, dot(p, fp))
        x = x + step * p
        r = r - step * fp
        rr_new = dot(r, r)
        p = r + ratio(rr_new, rr) * p
        rr = rr_new
    return x


def natural_step(direction: Tensor, f_direction: Tensor, max_kl: float) -> Tensor:
    """Scale `direction` so the quadratic KL model 0.5 d^T F d equals max_kl."""
    shs = 0.5 * (direction @ f_direction)
    return direction * torch.sqrt(max_kl / shs.clamp_min(1e-12))


def backtracking_line_search(evaluate: Callable[[Tensor], tuple[float, float]], x0: Tensor, full_step: Tensor,
                             loss0: float, max_kl: float, ratio: float = 0.8, max_backtracks: int = 15
                             ) -> tuple[Tensor, float, float, int]:
    """Shrink the step until the loss improves and the KL constraint holds.

    evaluate(x) -> (loss, kl). Returns (x, loss, kl, backtracks); on failure returns (x0, loss0, 0, -1).
    """
    for i in range(max_backtracks):
        x = x0 + (ratio ** i) * full_step
        loss, kl = evaluate(x)
        if kl <= max_kl and loss < loss0 and loss == loss:
            return x, loss, kl, i
    return x0, loss0, 0.0, -1
