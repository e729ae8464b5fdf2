"""The linear probe solver: L2-penalised linear models by full-batch L-BFGS on torch (CPU or CUDA).

Two models, the same ones scikit-learn fits, with the same C convention:

* ``multinomial`` (``LogisticRegression``): ``C * sum_i CE(x_i W + b, y_i) + 0.5 ||W||^2``,
  intercept not penalised.
* ``squared_hinge`` (``LinearSVC``, one-vs-rest): for each class c,
  ``C * sum_i max(0, 1 - t_ic (x_i w_c + b_c))^2 + 0.5 (||w_c||^2 + b_c^2)`` with ``t_ic = +-1``;
  LinearSVC penalises its intercept (it is a constant feature of value 1), so this does too. The
  k binary problems are independent; they are solved as one sum.

Convergence: **a fit has converged when the largest absolute entry of the gradient of the
objective as written above (weights and intercept) is at most ``tol``**. The objective is
1-strongly convex in ``W`` (its penalty is ``0.5 ||W||^2``), so ``||W - W*||_2 <= ||grad||_2``:
the test bounds the distance to the optimum, at every C alike. (scikit-learn's lbfgs tests the
gradient of the objective divided by ``C * n``, which at large C lets a fit stop far from the
optimum.) Where ``C * n`` is so large that ``tol`` would ask for a scaled gradient below
``SCALED_FLOOR`` (1e-8, what scikit-learn's converged reference ``tol=1e-8`` asks; float64
line searches stop resolving objective changes near 1e-9), that floor is the test instead. The test is made on every evaluation, including those inside the strong-Wolfe line
search of ``torch.optim.LBFGS``; the first point that passes is the answer. A fit that stops for
another reason (``max_iter`` iterations, or no more progress in floating point) is reported with
``converged=False``. Internally the objective is divided by ``C * n`` (a mean loss plus
``||W||^2 / (2 C n)``), which keeps its values near 1 whatever C and n.

Conditioning. L-BFGS on raw features needs hundreds of iterations at large C. The weights are
reparametrised, which changes neither the objective nor its optimum: ``W = Q (V * p)``, where
the orthonormal columns of ``Q`` are the principal directions of the training rows (eigenvectors
of ``Z^T Z``; the identity when the rows were already projected onto their span, whose
coordinates are orthogonal) and ``p = 1/sqrt(h)`` rescales each direction by the diagonal
curvature ``h_j = s_j^2 / (4 n) + 1 / (C n)`` (``s_j^2`` its sum of squares). ``||W|| = ||V p||``,
so the penalty is unchanged; L-BFGS simply sees a nearly isotropic problem.

Precision: the iterations run in float32 first; the eigendecomposition is float64. float32
evaluates the scaled gradient to about ``1e-7``, i.e. the unscaled one to about ``1e-7 * C * n``;
a float32 run that stalls above ``tol`` (large C, many rows) is finished in float64 from where it
stopped. ``dtype=torch.float64`` iterates in float64 throughout.

Memory: the loss and gradient are summed over row blocks of at most ``block_rows`` rows, so the
n x k logits never exist at once (the same full-batch gradient, the same optimum). The data stay
where they are given (host memory, or the device when they fit there); blocks move to ``device``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
import torch

LOSSES = ("multinomial", "squared_hinge")
DEFAULT_TOL = 1e-4
DEFAULT_MAX_ITER = 1000
#: the scaled gradient below which float64 line searches stop resolving objective changes
SCALED_FLOOR = 1e-8
BLOCK_BYTES = 256 * 2**20  # target size of one block's logits-shaped temporaries


class _Converged(Exception):
    """Raised inside the closure at the first point that meets the tolerance."""


@dataclasses.dataclass
class Solution:
    W: torch.Tensor  # [d, k] in the input space
    b: torch.Tensor  # [k]
    n_iter: int
    converged: bool
    grad_max: float  # largest absolute gradient entry of the unscaled objective
    objective: float  # the scaled objective (divided by C * n)


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
        if Z.device != self.device and Z.numel() * Z.element_size() <= _device_budget(self.device):
            Z = Z.to(self.device)
        self.Z = Z
        self.y = torch.as_tensor(np.asarray(y), dtype=torch.long).to(self.device)
        self.Q, self.s2 = None, None  # the L-BFGS basis (the squared hinge's Newton needs none)
        if loss == "multinomial" and orthogonal:
            self.s2 = torch.stack([(self._block(s, torch.float64) ** 2).sum(0) for s in self._slices()]).sum(0)
        elif loss == "multinomial":
            s2, self.Q = torch.linalg.eigh(self._gram())  # float64, kept so; cast per solve
            self.s2 = s2.clamp_min(0)

    # -- data access ------------------------------------------------------------------------
    def _slices(self):
        return [slice(i, min(i + self.block_rows, self.n)) for i in range(0, self.n, self.block_rows)]

    def _block(self, rows: slice, dtype: torch.dtype) -> torch.Tensor:
        return self.Z[rows].to(self.device, dtype, non_blocking=True)

    def _gram(self) -> torch.Tensor:
        """``Z^T Z`` in float64, summed over row blocks."""
        g = torch.zeros(self.d, self.d, dtype=torch.float64, device=self.device)
        for s in self._slices():
            zb = self.Z[s].to(self.device, torch.float64)
            g += zb.T @ zb
        return g

    # -- the objective ----------------------------------------------------------------------
    def weights(self, V: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        M = V * p[:, None]
        return M if self.Q is None else self.Q @ M

    def value_and_grad(self, W: torch.Tensor, b: torch.Tensor, C: float, dtype: torch.dtype | None = None
                       ) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Scaled objective and its gradient with respect to ``W`` and ``b``."""
        n = self.n
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        gW, gb = torch.zeros_like(W), torch.zeros_like(b)
        for s in self._slices():
            zb, yb = self._block(s, dtype or self.dtype), self.y[s]
            scores = zb @ W + b
            if self.loss == "multinomial":
                lse = torch.logsumexp(scores, dim=1)
                loss += (lse - scores.gather(1, yb[:, None])[:, 0]).sum(dtype=torch.float64)
                g = torch.softmax(scores, dim=1)
                g[torch.arange(len(yb), device=self.device), yb] -= 1
            else:
                t = torch.full_like(scores, -1.0)
                t[torch.arange(len(yb), device=self.device), yb] = 1.0
                margin = (1 - t * scores).clamp_min(0)
                loss += (margin ** 2).sum(dtype=torch.float64)
                g = -2 * t * margin
            gW += zb.T @ g
            gb += g.sum(0)
        reg = 1.0 / (C * n)
        value = loss / n + 0.5 * reg * (W * W).sum(dtype=torch.float64)
        gW = gW / n + reg * W
        gb = gb / n
        if self.loss == "squared_hinge":  # LinearSVC's intercept is a penalised constant feature
            value = value + 0.5 * reg * (b * b).sum(dtype=torch.float64)
            gb = gb + reg * b
        return float(value), gW, gb

    # -- solving ---------------------------------------------------------------------------
    def solve(self, C: float, start: Solution | None = None, tol: float = DEFAULT_TOL,
              max_iter: int = DEFAULT_MAX_ITER, history: int = 10) -> Solution:
        """Minimise at ``C`` from ``start`` (a solution at another C: its weights, not its variables,
        are carried over, since the scaling depends on C) or from zero. A float32 run that stops
        short of ``tol`` (rounding noise in the gradient) is finished in float64 from where it got."""
        with torch_threads(self.threads_for_size()):
            if self.loss == "squared_hinge":
                return self._newton(C, start, tol, max_iter)
            sol = self._lbfgs(C, start, tol, max_iter, history, self.dtype)
            if not sol.converged and self.dtype != torch.float64 and sol.n_iter < max_iter:
                polish = self._lbfgs(C, sol, tol, max_iter - sol.n_iter, history, torch.float64)
                polish.n_iter += sol.n_iter
                sol = polish
        return sol

    def threads_for_size(self) -> int:
        """One thread for small problems (below ~50 MFLOP per evaluation thread start-up and, on a
        shared machine, OpenMP contention cost more than they save), else torch's setting."""
        flops = 4 * self.n * self.d * self.k
        return torch.get_num_threads() if flops > 5e7 else 1

    def _lbfgs(self, C, start, tol, max_iter, history, dtype) -> Solution:
        curvature = 0.25 if self.loss == "multinomial" else 2.0
        Q = None if self.Q is None else self.Q.to(dtype)
        p = (curvature * self.s2.to(dtype) / self.n + 1.0 / (C * self.n)).rsqrt()
        pb = torch.full((self.k,), 1.0 / math.sqrt(curvature), dtype=dtype, device=self.device)
        if start is None:
            V = torch.zeros(len(p), self.k, dtype=dtype, device=self.device)
            vb = torch.zeros(self.k, dtype=dtype, device=self.device)
        else:
            W = start.W.to(dtype)
            V, vb = (W if Q is None else Q.T @ W) / p[:, None], start.b.to(dtype) / pb
        V.requires_grad_(True)
        vb.requires_grad_(True)
        opt = torch.optim.LBFGS([V, vb], lr=1, max_iter=max_iter, max_eval=max_iter * 5 // 4 + 1,
                                tolerance_grad=0.0, tolerance_change=_eps(dtype) * 1e-3,
                                history_size=history, line_search_fn="strong_wolfe")
        last: dict = {}

        def closure():
            with torch.no_grad():
                M = V * p[:, None]
                W, b = (M if Q is None else Q @ M), vb * pb
                value, gW, gb = self.value_and_grad(W, b, C, dtype)
                gmax = float(max(gW.abs().max(), gb.abs().max())) * C * self.n  # of the unscaled objective
                last.update(W=W.clone(), b=b.clone(), value=value, gmax=gmax)
                if gmax <= max(tol, SCALED_FLOOR * C * self.n):
                    raise _Converged
                gM = gW if Q is None else Q.T @ gW
                V.grad, vb.grad = gM * p[:, None], gb * pb
            return value

        try:
            opt.step(closure)
            converged = _evaluate_at_end(closure)  # the last evaluation may be a rejected trial point
        except _Converged:
            converged = True
        n_iter = opt.state[opt._params[0]].get("n_iter", 0)
        return Solution(W=last["W"], b=last["b"], n_iter=int(n_iter), converged=converged,
                        grad_max=last["gmax"], objective=last["value"])

    def _newton(self, C: float, start: Solution | None, tol: float, max_iter: int,
                cg_iter: int = 100) -> Solution:
        """Squared hinge: truncated (generalised) Newton with preconditioned conjugate gradients and a
        backtracking line search, in float64 (liblinear's primal method). L-BFGS needs thousands
        of iterations on this piecewise-quadratic objective at large C; Newton needs tens. The
        k one-vs-rest problems are independent, so CG runs on each column of the block at once."""
        dt = torch.float64
        W = torch.zeros(self.d, self.k, dtype=dt, device=self.device) if start is None else start.W.to(dt).clone()
        b = torch.zeros(self.k, dtype=dt, device=self.device) if start is None else start.b.to(dt).clone()
        cn = C * self.n
        stop = max(tol, SCALED_FLOOR * cn)
        n_iter, converged = 0, False
        value, gW, gb = self.value_and_grad(W, b, C, dt)
        while True:
            gW, gb = gW * cn, gb * cn  # the unscaled objective's gradient
            gmax = float(max(gW.abs().max(), gb.abs().max()))
            if gmax <= stop or n_iter >= max_iter:
                converged = gmax <= stop
                break
            active = self._active_mask(W, b)
            # Jacobi preconditioner: the Hessian's diagonal 1 + 2C sum_active z^2 (the intercept: 1 + 2C |active|)
            pre_W = 1 + 2 * C * self._blocks_sum(lambda zb, ab: (zb * zb).T @ ab.to(dt), active, (self.d, self.k))
            pre_b = 1 + 2 * C * active.sum(0).to(dt)
            sW, sb = _pcg(lambda vW, vb: self._hess_vec(vW, vb, C, active), -gW, -gb, pre_W, pre_b, cg_iter,
                          eta=min(0.5, math.sqrt(gmax / max(gmax, 1.0))))
            slope = float((gW * sW).sum() + (gb * sb).sum())
            step = 1.0
            for _ in range(30):  # Armijo backtracking on the unscaled objective
                new_value, nW, nb = self.value_and_grad(W + step * sW, b + step * sb, C, dt)
                if new_value * cn <= value * cn + 1e-4 * step * slope:
                    break
                step /= 2
            W, b, value, gW, gb = W + step * sW, b + step * sb, new_value, nW, nb
            n_iter += 1
        return Solution(W=W, b=b, n_iter=n_iter, converged=converged, grad_max=gmax, objective=value)

    def _active_mask(self, W, b) -> torch.Tensor:
        """``[n, k]``: where the one-vs-rest margin ``t (z w + b)`` is below 1."""
        parts = []
        for s in self._slices():
            scores = self._block(s, W.dtype) @ W + b
            t = torch.full_like(scores, -1.0)
            t[torch.arange(len(scores), device=self.device), self.y[s]] = 1.0
            parts.append(t * scores < 1)
        return torch.cat(parts)

    def _blocks_sum(self, fn, active, shape) -> torch.Tensor:
        out = torch.zeros(shape, dtype=torch.float64, device=self.device)
        for s in self._slices():
            out += fn(self._block(s, torch.float64), active[s])
        return out

    def _hess_vec(self, vW, vb, C, active):
        """The generalised Hessian of the unscaled squared-hinge objective times ``(vW, vb)``."""
        hW, hb = vW.clone(), vb.clone()
        for s in self._slices():
            zb = self._block(s, vW.dtype)
            u = (zb @ vW + vb) * active[s]
            hW += 2 * C * (zb.T @ u)
            hb += 2 * C * u.sum(0)
        return hW, hb

    def scores(self, Z, sol: Solution) -> torch.Tensor:
        Z = torch.as_tensor(Z)
        with torch_threads(self.threads_for_size()):
            return torch.cat([Z[s].to(self.device, sol.W.dtype) @ sol.W + sol.b
                              for s in (slice(i, i + self.block_rows) for i in range(0, len(Z), self.block_rows))]
                             or [torch.zeros(0, self.k)])


def _pcg(hess_vec, rW, rb, pre_W, pre_b, max_iter: int, eta: float):
    """Solve ``H x = r`` column by column (independent systems sharing one batched H-product) by
    preconditioned CG, until each column's residual is below ``eta`` times its start."""
    xW, xb = torch.zeros_like(rW), torch.zeros_like(rb)
    zW, zb = rW / pre_W, rb / pre_b
    pW, pb = zW.clone(), zb.clone()
    rz = (rW * zW).sum(0) + rb * zb
    goal = eta * ((rW * rW).sum(0) + rb * rb).sqrt()
    for _ in range(max_iter):
        hW, hb = hess_vec(pW, pb)
        alpha = rz / ((pW * hW).sum(0) + pb * hb).clamp_min(1e-300)
        xW, xb = xW + alpha * pW, xb + alpha * pb
        rW, rb = rW - alpha * hW, rb - alpha * hb
        if bool((((rW * rW).sum(0) + rb * rb).sqrt() <= goal).all()):
            break
        zW, zb = rW / pre_W, rb / pre_b
        rz_new = (rW * zW).sum(0) + rb * zb
        beta = rz_new / rz.clamp_min(1e-300)
        pW, pb, rz = zW + beta * pW, zb + beta * pb, rz_new
    return xW, xb


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _evaluate_at_end(closure) -> bool:
    try:
        closure()
    except _Converged:
        return True
    return False


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


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
