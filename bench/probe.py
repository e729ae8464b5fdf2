"""The linear probe solver: L2-penalised linear models by truncated Newton on torch (CPU or CUDA).

Two models, the same ones scikit-learn fits, with the same C convention:

* ``multinomial`` (``LogisticRegression``): ``C * sum_i CE(x_i W + b, y_i) + 0.5 ||W||^2``,
  intercept not penalised.
* ``squared_hinge`` (``LinearSVC``, one-vs-rest): for each class c,
  ``C * sum_i max(0, 1 - t_ic (x_i w_c + b_c))^2 + 0.5 (||w_c||^2 + b_c^2)`` with ``t_ic = +-1``;
  LinearSVC penalises its intercept (it is a constant feature of value 1), so this does too. The
  k binary problems are independent; they are solved as one sum.

Method: Newton's method with the Newton system solved inexactly by preconditioned conjugate
gradients (CG) on Hessian-vector products, and a backtracking (Armijo) line search; for the
squared hinge the generalised Hessian (liblinear's primal method). A Hessian-vector product costs
two matrix products with the data, like a gradient, and needs no Hessian in memory. Why not
L-BFGS: on separable data at large C (Office amazon->webcam HOG, C=10) the logistic loss is flat
along the directions that separate the classes and steep along others; L-BFGS, even with the
data's principal directions rescaled, stopped after 746 iterations short of the tolerance,
where Newton, which uses the curvature where it is, needs tens of iterations.

Basis: the data are rotated once onto their principal directions (eigenvectors ``Q`` of
``Z^T Z``, float64), so their columns are orthogonal; ``orthogonal=True`` says the caller already
did so (rows projected onto their span). In that basis the Hessian's diagonal (the Jacobi
preconditioner of CG, recomputed at every Newton iteration from the current probabilities or
margins) is a good approximation of the Hessian, since the data's cross-products vanish.
``||W|| = ||Q^T W||``, so the penalty, the objective and its optimum are unchanged; weights are
returned in the input space.

Convergence: **a fit has converged when the largest absolute entry of the gradient of the
objective as written above (weights and intercept) is at most ``tol``**. The objective is
1-strongly convex in ``W`` (its penalty is ``0.5 ||W||^2``), so ``||W - W*||_2 <= ||grad||_2``:
the test bounds the distance to the optimum, at every C alike. (scikit-learn's lbfgs tests the
gradient of the objective divided by ``C * n``, which at large C lets a fit stop far from the
optimum.) Where ``C * n`` is so large that ``tol`` would ask for a scaled gradient below
``SCALED_FLOOR`` (1e-8, what scikit-learn's converged reference ``tol=1e-8`` asks), that floor is
the test instead. A fit that stops for another reason (``max_iter`` Newton iterations, or a line
search that finds no decrease in floating point) is reported with ``converged=False``.

Precision: objective and gradient (hence the convergence test and the line search) are computed
in float64 from the stored data; Hessian-vector products, which only steer CG, run in ``dtype``
(float32 by default, float64 on request); the rotated data are stored in ``dtype``.

Memory: every product with the data is summed over row blocks of at most ``block_rows`` rows,
so no n x d float64 copy exists; the data stay where they are given (host memory, or the device
when they fit there) and blocks move to ``device``. A Newton iteration keeps the n x k
probabilities (or margins) of its point, in ``dtype``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
import torch

LOSSES = ("multinomial", "squared_hinge")
DEFAULT_TOL = 1e-4
DEFAULT_MAX_ITER = 200  # Newton iterations; a converged fit takes tens
#: the scaled gradient below which float64 line searches stop resolving objective changes
SCALED_FLOOR = 1e-8
BLOCK_BYTES = 256 * 2**20  # target size of one block's logits-shaped temporaries
CG_MAX_ITER = 250  # conjugate-gradient steps per Newton iteration


@dataclasses.dataclass
class Solution:
    W: torch.Tensor  # [d, k] in the input space (float64)
    b: torch.Tensor  # [k]
    n_iter: int  # Newton iterations
    converged: bool
    grad_max: float  # largest absolute gradient entry of the unscaled objective
    objective: float  # the scaled objective (divided by C * n)
    n_hess: int = 0  # Hessian-vector products (CG steps), the bulk of the work


class Problem:
    """Training rows, labels and the solver's basis, shared by every C of a path.

    ``Z``: ``[n, d]`` (numpy or torch; float32), ``y``: class indices ``0..k-1``.
    ``orthogonal=True`` says the columns of Z are already orthogonal (rows projected onto their
    span), so no rotation is needed.
    """

    def __init__(self, Z, y, k: int, loss: str = "multinomial", device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, orthogonal: bool = False, block_rows: int | None = None):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss '{loss}'; known: {', '.join(LOSSES)}")
        self.loss, self.k, self.dtype = loss, int(k), dtype
        self.device = torch.device(device)
        Z = torch.as_tensor(Z)
        self.n, self.d = Z.shape
        self.block_rows = block_rows or max(256, BLOCK_BYTES // (4 * max(self.k, self.d) * 4))
        self.Z = Z
        self.Q = None if orthogonal else torch.linalg.eigh(self._gram())[1]  # float64
        if self.Q is not None:  # rotate once, block by block, into the principal directions
            self.Z = torch.cat([(self._block(s, torch.float64) @ self.Q).to(Z.device, dtype) for s in self._slices()])
        if self.Z.device != self.device and self.Z.numel() * self.Z.element_size() <= _device_budget(self.device):
            self.Z = self.Z.to(self.device)
        self.y = torch.as_tensor(np.asarray(y), dtype=torch.long).to(self.device)
        self._rows = [torch.arange(s.stop - s.start, device=self.device) for s in self._slices()]

    # -- data access ------------------------------------------------------------------------
    def _slices(self):
        return [slice(i, min(i + self.block_rows, self.n)) for i in range(0, self.n, self.block_rows)]

    def _block(self, rows: slice, dtype: torch.dtype) -> torch.Tensor:
        return self.Z[rows].to(self.device, dtype, non_blocking=True)

    def _gram(self) -> torch.Tensor:
        """``Z^T Z`` in float64, summed over row blocks."""
        g = torch.zeros(self.d, self.d, dtype=torch.float64, device=self.device)
        for s in self._slices():
            zb = self._block(s, torch.float64)
            g += zb.T @ zb
        return g

    def _to_basis(self, W: torch.Tensor) -> torch.Tensor:
        """Input-space ``W [d, k]`` to the solver's ``[k, d]`` in the rotated basis (classes as rows:
        torch's CPU matrix products are several times faster with the skinny operand that way)."""
        W = W.to(self.device, torch.float64)
        return (W if self.Q is None else self.Q.T @ W).T.contiguous()

    def _from_basis(self, W: torch.Tensor) -> torch.Tensor:
        return W.T if self.Q is None else self.Q @ W.T

    # -- the objective (unscaled, in the rotated basis, float64; weights W [k, d]) ---------------
    def _value_and_grad(self, W, b, C) -> tuple[float, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """``C * sum(loss) + penalty``, its gradient, and per row block the curvature weights the
        Hessian needs at this point (probabilities, or the hinge's active set as 0/1; ``[k, rows]``),
        in ``dtype``."""
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        gW, gb, state = torch.zeros_like(W), torch.zeros_like(b), []
        for s, rows in zip(self._slices(), self._rows):
            zb, yb = self._block(s, torch.float64), self.y[s]
            scores = W @ zb.T + b[:, None]
            if self.loss == "multinomial":
                lse = torch.logsumexp(scores, dim=0)
                loss += (lse - scores[yb, rows]).sum()
                g = torch.softmax(scores, dim=0)
                state.append(g.to(self.dtype, copy=True))  # g changes below
                g[yb, rows] -= 1
            else:
                t = torch.full_like(scores, -1.0)
                t[yb, rows] = 1.0
                margin = (1 - t * scores).clamp_min(0)
                loss += (margin ** 2).sum()
                state.append((margin > 0).to(self.dtype))
                g = -2 * t * margin
            gW += g @ zb
            gb += g.sum(1)
        value = C * loss + 0.5 * (W * W).sum()
        gW, gb = C * gW + W, C * gb
        if self.loss == "squared_hinge":  # LinearSVC's intercept is a penalised constant feature
            value, gb = value + 0.5 * (b * b).sum(), gb + b
        return float(value), gW, gb, state

    def _hess_vec(self, vW, vb, C, state) -> tuple[torch.Tensor, torch.Tensor]:
        """The (generalised) Hessian at the point ``state`` was taken at, times ``(vW, vb)``."""
        hW = torch.zeros_like(vW)
        hb = torch.zeros_like(vb)
        vW_, vb_ = vW.to(self.dtype), vb.to(self.dtype)[:, None]
        for s, weight in zip(self._slices(), state):
            zb = self._block(s, self.dtype)
            u = vW_ @ zb.T + vb_
            if self.loss == "multinomial":  # softmax Jacobian: diag(p) - p p^T, row by row
                u = weight * (u - (weight * u).sum(0, keepdim=True))
            else:
                u = 2 * weight * u
            hW += (u @ zb).to(hW.dtype)
            hb += u.sum(1).to(hb.dtype)
        hW, hb = C * hW + vW, C * hb
        return hW, (hb + vb if self.loss == "squared_hinge" else hb)

    def _hess_diag(self, C, state) -> tuple[torch.Tensor, torch.Tensor]:
        """The Hessian's diagonal (Jacobi preconditioner); in the orthogonal basis it carries most of it."""
        dW = torch.zeros(self.k, self.d, dtype=torch.float64, device=self.device)
        db = torch.zeros(self.k, dtype=torch.float64, device=self.device)
        for s, weight in zip(self._slices(), state):
            w = weight * (1 - weight) if self.loss == "multinomial" else 2 * weight
            dW += (w @ self._block(s, self.dtype) ** 2).to(torch.float64)
            db += w.sum(1).to(torch.float64)
        dW, db = 1 + C * dW, C * db + (1 if self.loss == "squared_hinge" else 0)
        return dW, db.clamp_min(1e-12 * max(1.0, float(db.max())))

    def _preconditioner(self, C, state):
        """Jacobi (divide by the Hessian's diagonal). The multinomial objective does not change when
        one constant is added to every intercept (its Hessian is singular there): the intercept's
        step is kept centred, so CG works where the Hessian is positive definite."""
        dW, db = self._hess_diag(C, state)
        if self.loss == "multinomial":
            return lambda rW, rb: (rW / dW, (rb / db) - (rb / db).mean())
        return lambda rW, rb: (rW / dW, rb / db)

    # -- public -----------------------------------------------------------------------------
    def objective(self, W, b, C: float) -> float:
        """The scaled objective (divided by ``C * n``) at input-space weights ``W [d, k]``, ``b [k]``."""
        W = self._to_basis(torch.as_tensor(W))
        value, *_ = self._value_and_grad(W, torch.as_tensor(b, dtype=torch.float64, device=self.device), C)
        return value / (C * self.n)

    def solve(self, C: float, start: Solution | None = None, tol: float = DEFAULT_TOL,
              max_iter: int = DEFAULT_MAX_ITER) -> Solution:
        """Minimise at ``C`` from ``start`` (a solution at another C: the path's warm start) or zero."""
        with torch_threads(self.threads_for_size()):
            return self._newton(C, start, tol, max_iter)

    def threads_for_size(self) -> int:
        """One thread for small problems (below ~50 MFLOP per evaluation thread start-up and, on a
        shared machine, OpenMP contention cost more than they save), else torch's setting."""
        flops = 4 * self.n * self.d * self.k
        return torch.get_num_threads() if flops > 5e7 else 1

    def _newton(self, C: float, start: Solution | None, tol: float, max_iter: int) -> Solution:
        f64 = dict(dtype=torch.float64, device=self.device)
        W = torch.zeros(self.k, self.d, **f64) if start is None else self._to_basis(start.W)
        b = torch.zeros(self.k, **f64) if start is None else start.b.to(**f64).clone()
        per_class = self.loss == "squared_hinge"  # k independent systems: CG class by class
        stop = max(tol, SCALED_FLOOR * C * self.n)
        n_iter = n_hess = 0
        value, gW, gb, state = self._value_and_grad(W, b, C)
        while True:
            gmax = float(max(gW.abs().max(), gb.abs().max()))
            if gmax <= stop or n_iter >= max_iter:
                break
            sW, sb, steps = _pcg(lambda vW, vb: self._hess_vec(vW, vb, C, state), -gW, -gb,
                                 self._preconditioner(C, state), CG_MAX_ITER, eta=min(0.5, math.sqrt(gmax / max(gmax, 1.0))), per_class=per_class)
            n_hess += steps
            slope = float((gW * sW).sum() + (gb * sb).sum())
            step, accepted = 1.0, False
            for _ in range(40):  # Armijo backtracking
                new = self._value_and_grad(W + step * sW, b + step * sb, C)
                if new[0] <= value + 1e-4 * step * slope:
                    accepted = True
                    break
                step /= 2
            n_iter += 1
            if not accepted:  # no decrease representable in float64: as close as this precision gets
                break
            W, b = W + step * sW, b + step * sb
            value, gW, gb, state = new
        gmax = float(max(gW.abs().max(), gb.abs().max()))
        return Solution(W=self._from_basis(W), b=b, n_iter=n_iter, converged=gmax <= stop, grad_max=gmax,
                        objective=value / (C * self.n), n_hess=n_hess)

    def scores(self, Z, sol: Solution) -> torch.Tensor:
        Z = torch.as_tensor(Z)
        W, b = sol.W.to(self.dtype), sol.b.to(self.dtype)
        with torch_threads(self.threads_for_size()):
            return torch.cat([Z[s].to(self.device, self.dtype) @ W + b
                              for s in (slice(i, i + self.block_rows) for i in range(0, len(Z), self.block_rows))]
                             or [torch.zeros(0, self.k)])


def _pcg(hess_vec, rW, rb, precondition, max_iter: int, eta: float, per_class: bool):
    """Solve ``H x = r`` by preconditioned CG until the residual is below ``eta`` times its start;
    with ``per_class``, as independent systems (one per row of ``[k, d]``) sharing one batched
    H-product. Returns ``(xW, xb, steps)``."""
    def dot(aW, ab, cW, cb):
        return (aW * cW).sum(1) + ab * cb if per_class else (aW * cW).sum() + (ab * cb).sum()

    def rows(a):  # a step length per class broadcast over its row
        return a[:, None] if per_class else a

    xW, xb = torch.zeros_like(rW), torch.zeros_like(rb)
    zW, zb = precondition(rW, rb)
    pW, pb = zW.clone(), zb.clone()
    rz = dot(rW, rb, zW, zb)
    goal = eta * dot(rW, rb, rW, rb).sqrt()
    for step in range(1, max_iter + 1):
        hW, hb = hess_vec(pW, pb)
        alpha = rz / dot(pW, pb, hW, hb).clamp_min(1e-300)
        xW, xb = xW + rows(alpha) * pW, xb + alpha * pb
        rW, rb = rW - rows(alpha) * hW, rb - alpha * hb
        if bool((dot(rW, rb, rW, rb).sqrt() <= goal).all()):
            break
        zW, zb = precondition(rW, rb)
        rz_new = dot(rW, rb, zW, zb)
        beta = rz_new / rz.clamp_min(1e-300)
        pW, pb, rz = zW + rows(beta) * pW, zb + beta * pb, rz_new
    return xW, xb, step


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _device_budget(device: torch.device) -> int:
    """Bytes of training data worth moving to ``device`` at once: half its free memory on CUDA."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return 1 << 62


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
