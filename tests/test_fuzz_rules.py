"""Property-based fuzzing of every registered rule and transform under hostile rows.

The rule and wrapper names come from the registry, so a new rule is fuzzed as
soon as it is registered: without an entry in :data:`PROMISES` it is built
with its defaults and must at least stay finite with no hostile row and return
identical inputs unchanged; a rule that needs parameters fails here until it is
given a promise.

Two levels:

* the pure rule (``aggregate_updates``) on finite hostile rows: 1e30 of random
  signs, all-zero rows, identical copies of a far vector, or the negated honest
  mean, in at most the number of rows the rule promises to tolerate;
* the strategy's ``aggregate_fit`` on hand-built ``FitRes``: the same plus
  rows with NaN and +-Inf, which the base must reject before any rule sees them.

A promise is a bound on the aggregate in terms of the honest rows only (their
coordinate range ``[lo, hi]``, width ``w = hi - lo``, mean ``h``, L2 diameter
``D``, largest norm); each is derived in the comment next to it.

Example counts come from the hypothesis profile (``tests/conftest.py``):
``ci`` runs a few hundred rounds in total, ``nightly`` more than 10,000.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flsec_flower.aggregation import RoundContext
from flsec_flower.app.registry import RULES, WRAPPERS
from strategies import CoordinateMedian

HOSTILE = ["huge", "zero", "copies", "negated"]
NON_FINITE = ["nan", "inf", "-inf"]
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Round:
    """Honest rows and the statistics promises are stated in."""

    honest: np.ndarray  # (h, d) float64 copy of the float32 rows

    @property
    def lo(self):
        return self.honest.min(axis=0)

    @property
    def hi(self):
        return self.honest.max(axis=0)

    @property
    def mean(self):
        return self.honest.mean(axis=0)

    @property
    def diameter(self):
        diff = self.honest[:, None, :] - self.honest[None, :, :]
        return float(np.sqrt((diff**2).sum(-1)).max())

    @property
    def max_norm(self):
        return float(np.linalg.norm(self.honest, axis=1).max())

    @property
    def eps(self):
        return 1e-4 * (1.0 + float(np.abs(self.honest).max()))


def in_box(widen: float) -> Callable:
    def check(agg, r: Round, n: int, bad: int) -> bool:
        w = (r.hi - r.lo) * widen + r.eps
        return bool(((agg >= r.lo - w) & (agg <= r.hi + w)).all())

    return check


def in_ball(factor: Callable[[int, int], float]) -> Callable:
    def check(agg, r: Round, n: int, bad: int) -> bool:
        return np.linalg.norm(agg - r.mean) <= factor(n, bad) * r.diameter + r.eps * math.sqrt(
            len(agg)
        )

    return check


def norm_at_most(bound: Callable[[Round], float]) -> Callable:
    def check(agg, r: Round, n: int, bad: int) -> bool:
        return np.linalg.norm(agg) <= bound(r) * (1 + 1e-5) + r.eps

    return check


def abs_box(agg, r: Round, n: int, bad: int) -> bool:
    return bool((np.abs(agg) <= np.maximum(np.abs(r.lo), np.abs(r.hi)) + r.eps).all())


@dataclass
class Promise:
    make: Callable[[int], object]  # n -> strategy
    tolerates: Callable[[int], int]  # n -> hostile rows it promises to withstand
    bound: Callable | None  # (agg, round, n, bad) -> bool
    identical: bool = True  # all-identical rows return that row
    needs: str = ""  # "trainer" (DiverseFL, FLTrust), "truth" (oracle)


def cpu(cls, **kw):
    return lambda n: cls(device="cpu", **kw)


def half(n):
    return (n - 1) // 2


def median():
    return CoordinateMedian(device="cpu")


PROMISES: dict[str, Promise] = {
    # the mean promises nothing under attack
    "fedavg": Promise(cpu(RULES["fedavg"], weighted=False), lambda n: 0, None),
    # median / trimmed mean with b >= bad: every coordinate lies in the honest range
    "median": Promise(cpu(RULES["median"]), half, in_box(0.0)),
    "trimmed_mean": Promise(
        lambda n: RULES["trimmed_mean"](b=half(n), device="cpu"), half, in_box(0.0)
    ),
    "noisy_median": Promise(cpu(RULES["noisy_median"], sigma=0.0), half, in_box(0.0)),
    # Krum's winner (and each Multi-Krum pick) has a score no larger than the worst honest
    # score <= (n-f-2) D^2, and at least one honest neighbour: within sqrt(n-f-2) D of an
    # honest row, so within (sqrt(n-f-2) + 1) D of their mean.
    "krum": Promise(
        lambda n: RULES["krum"](f=(n - 3) // 2, device="cpu"),
        lambda n: (n - 3) // 2,
        in_ball(lambda n, b: math.sqrt(n - (n - 3) // 2 - 2) + 1),
    ),
    "multikrum": Promise(
        lambda n: RULES["multikrum"](f=(n - 3) // 2, device="cpu"),
        lambda n: (n - 3) // 2,
        in_ball(lambda n, b: math.sqrt(n - (n - 3) // 2 - 2) + 1),
    ),
    # Bulyan: the median of the theta selected values is in [lo, hi] (honest majority) and
    # the beta-window closest to it is no wider than the window of honest values: [lo-w, hi+w]
    "bulyan": Promise(
        lambda n: RULES["bulyan"](f=(n - 3) // 4, device="cpu"),
        lambda n: (n - 3) // 4,
        in_box(1.0),
    ),
    # RFA from the median: |z - h| <= (n |z0 - h| + 2 (n - f) r) / (n - 2f), z0, r <= D_box
    "rfa": Promise(
        cpu(RULES["rfa"]), half, in_ball(lambda n, b: (3 * n - 2 * b) / (n - 2 * b) * 1.8)
    ),
    "geometric_median": Promise(
        cpu(RULES["geometric_median"]),
        half,
        in_ball(lambda n, b: (3 * n - 2 * b) / (n - 2 * b) * 1.8),
    ),
    # one clipping step from the zero centre moves by at most tau, whatever the rows; the
    # distances come from a Gram matrix centred at a central row, which is an honest row
    # (keeping them accurate) only while the honest rows are a majority
    "centered_clipping": Promise(
        cpu(RULES["centered_clipping"], tau=1.0, iterations=2),
        half,
        norm_at_most(lambda r: 2.0),
        identical=False,  # clips: returns x only when |x| <= tau
    ),
    # FLAME clips every admitted row to the median norm, which a minority cannot lift
    # above the largest honest norm
    "flame": Promise(
        cpu(RULES["flame"], noise_lambda=0.0), half, norm_at_most(lambda r: r.max_norm)
    ),
    # FoolsGold weights rows by history dissimilarity in [0, 1]: no bound, only finiteness;
    # identical histories are sybils to it (all weights 0)
    "foolsgold": Promise(cpu(RULES["foolsgold"]), lambda n: n - 1, None, identical=False),
    # DiverseFL keeps rows with <u, g> > 0 and |u| < 2 |g| (g = the honest mean here)
    "diversefl": Promise(
        cpu(RULES["diversefl"]),
        lambda n: n - 1,
        norm_at_most(lambda r: 2.0 * float(np.linalg.norm(r.mean))),
        needs="trainer",
    ),
    # FLTrust rescales every row to |g0| and takes a convex combination
    "fltrust": Promise(
        cpu(RULES["fltrust"]),
        lambda n: n - 1,
        norm_at_most(lambda r: float(np.linalg.norm(r.mean))),
        needs="trainer",
    ),
    # the oracle averages the truly honest rows
    "oracle": Promise(
        cpu(RULES["oracle"]), lambda n: n - 1, in_ball(lambda n, b: 0.0), needs="truth"
    ),
    # DnC has no deterministic bound (a huge row off the top singular direction can stay):
    # finiteness only, with f = the hostile rows it is told to expect
    "dnc": Promise(lambda n: RULES["dnc"](f=half(n), device="cpu"), half, None),
    # SignGuard clips every kept row to the median norm, which a minority cannot lift
    # above the largest honest norm
    "signguard": Promise(cpu(RULES["signguard"]), half, norm_at_most(lambda r: r.max_norm)),
    # clustering by cosine keeps the larger cluster: no bound when honest rows point anywhere
    "clustering": Promise(cpu(RULES["clustering"]), half, None),
    # CRFL clips the new model (from the zero model here) to rho_1 = clip, whatever the rows
    "crfl": Promise(
        cpu(RULES["crfl"], clip=1.0, clip_growth=0.0, sigma=0.0),
        lambda n: n - 1,
        norm_at_most(lambda r: 1.0),
        identical=False,  # clips the model: returns x only when |G + x| <= clip
    ),
    # FLDetector has no history in one round: its base, the coordinate median, decides
    "fldetector": Promise(cpu(RULES["fldetector"]), half, in_box(0.0)),
    # ERR/LFR: leave-one-out evaluations (here the squared distance to the honest mean), then
    # the mean of the rest: removing f rows of the largest impact promises no bound
    "fang_rejection": Promise(
        lambda n: RULES["fang_rejection"](f=half(n), criterion="union", device="cpu"),
        half,
        None,
        needs="trainer",
    ),
    # LASA clips every row to the median norm and averages rows of each layer (one layer
    # here): the mean of rows no longer than the median norm, which a minority cannot lift
    # above the largest honest norm
    "lasa": Promise(
        cpu(RULES["lasa"]),
        half,
        norm_at_most(lambda r: r.max_norm),
        identical=False,  # sparsifies: keeps the top 70% of each row's weight coordinates
    ),
    # DeepSight clips every accepted row to the median norm, which a minority cannot lift
    # above the largest honest norm (SignGuard's argument)
    "deepsight": Promise(
        cpu(RULES["deepsight"], seeds=1, num_inputs=4),
        half,
        norm_at_most(lambda r: r.max_norm),
        needs="trainer",
    ),
    # Auror flags per-coordinate minorities: no bound, finiteness only
    "auror": Promise(cpu(RULES["auror"], alpha=0.5), half, None),
    # ---- transforms, around the coordinate median
    # buckets of 2: a bad row spoils one bucket; with 2 bad < ceil(n/2) buckets the median of
    # the bucket means lies in the range of the clean buckets' means, inside [lo, hi]
    "bucketing": Promise(
        lambda n: WRAPPERS["bucketing"](median(), s=2, device="cpu"),
        lambda n: (-(-n // 2) - 1) // 2,
        in_box(0.0),
    ),
    # NNM(f): an honest row's n - f nearest rows are within D of it, so mixed honest rows
    # have coordinates in [lo - D, hi + D]; the median of a majority of them stays there
    "nnm": Promise(
        lambda n: WRAPPERS["nnm"](median(), f=half(n), device="cpu"),
        half,
        lambda agg, r, n, b: in_box(0.0)(
            agg, Round(np.concatenate([r.honest - r.diameter, r.honest + r.diameter])), n, b
        ),
    ),
    # norm clipping to 1 before the median: every coordinate of every row is in [-1, 1]
    "norm_clip": Promise(
        lambda n: WRAPPERS["norm_clip"](median(), max_norm=1.0, device="cpu"),
        lambda n: n - 1,
        lambda agg, r, n, b: bool((np.abs(agg) <= 1.0 + 1e-5).all()),
        identical=False,  # clips rows longer than max_norm
    ),
    # RLR only flips signs of the median's coordinates
    "rlr": Promise(lambda n: WRAPPERS["rlr"](median(), theta=1, device="cpu"), half, abs_box),
    "dp_noise": Promise(
        lambda n: WRAPPERS["dp_noise"](median(), sigma=0.0, device="cpu"), half, in_box(0.0)
    ),
}


def promise_for(name: str) -> Promise:
    if name in PROMISES:
        return PROMISES[name]
    cls = RULES.get(name) or WRAPPERS[name]
    if name in WRAPPERS:
        return Promise(lambda n: cls(median(), device="cpu"), lambda n: 0, None)
    return Promise(cpu(cls), lambda n: 0, None)


NAMES = sorted(RULES) + sorted(WRAPPERS)


class FakeTrainer:
    """The clients' procedure on the server, faked: it returns a fixed guiding update."""

    def __init__(self, guide: torch.Tensor):
        self.guide = guide

    def __call__(self, global_flat, x, y, steps=None, server_round=1, reference_size=None):
        return self.guide.clone()

    def steps_for(self, num_examples):
        return 1

    def evaluate(self, flat, x, y):
        loss = float(((flat - self.guide) ** 2).sum())
        return loss, min(1.0, loss)


def equip(strategy, promise: Promise, guide: torch.Tensor, pids, bad_pids):
    """Give DiverseFL/FLTrust their server-side data and the oracle its ground truth."""
    inner = strategy
    if promise.needs == "trainer":
        sample = (torch.zeros((2, 1)), torch.zeros(2, dtype=torch.long))
        if hasattr(inner, "samples"):
            inner.samples = {p: sample for p in pids}
        if hasattr(inner, "root_data"):
            inner.root_data = sample
        strategy.local_trainer = FakeTrainer(guide)
    if promise.needs == "truth":
        strategy.malicious_partition_ids = frozenset(int(i) for i in bad_pids)
    return strategy


@st.composite
def hostile_rounds(draw, kinds):
    n = draw(st.integers(3, 14))
    d = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(kinds))
    bad = draw(st.integers(0, n - 1))
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=d) * draw(st.sampled_from([0.0, 1.0, 10.0]))
    honest = centre + rng.normal(size=(n, d)) * draw(st.sampled_from([1e-3, 1.0, 5.0]))
    return honest.astype(np.float32), bad, kind, rng


def hostile_rows(kind, count, honest, rng):
    d = honest.shape[1]
    if kind == "huge":
        return 1e30 * rng.choice([-1.0, 1.0], size=(count, d))
    if kind == "zero":
        return np.zeros((count, d))
    if kind == "copies":
        far = honest.mean(0) + 10 * (1 + np.abs(honest).max()) * rng.normal(size=d)
        return np.tile(far, (count, 1))
    if kind == "negated":
        return np.tile(-honest.mean(0), (count, 1))
    value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[kind]
    rows = np.tile(honest.mean(0), (count, 1))
    rows[:, rng.integers(d)] = value
    return rows


def context(n, seed=0):
    return RoundContext(
        server_round=1,
        partition_ids=list(range(n)),
        num_examples=torch.ones(n),
        global_params=torch.zeros(1),
        generator=torch.Generator().manual_seed(seed),
    )


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=hostile_rounds(HOSTILE))
def test_rule_on_finite_hostile_rows(name, data):
    honest, bad, kind, rng = data
    promise = promise_for(name)
    n = honest.shape[0]
    bad = min(bad, promise.tolerates(n))
    rows = honest.copy()
    bad_rows = rng.choice(n, bad, replace=False)
    rows[bad_rows] = hostile_rows(kind, bad, np.delete(honest, bad_rows, 0), rng)
    good = Round(np.delete(honest, bad_rows, 0).astype(np.float64))
    u = torch.from_numpy(rows.astype(np.float32))
    ctx = context(n)
    strategy = equip(
        promise.make(n), promise, torch.from_numpy(good.mean.astype(np.float32)), range(n), bad_rows
    )
    ctx.local_trainer = strategy.local_trainer
    ctx.global_params = torch.zeros(u.shape[1])
    agg = strategy.aggregate_updates(u, ctx).update.double().numpy()
    assert np.isfinite(agg).all(), (name, kind, bad)
    if promise.bound is not None:
        assert promise.bound(agg, good, n, bad), (name, kind, bad, agg)


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=hostile_rounds(["honest"]))
def test_identical_rows_return_that_row(name, data):
    honest, _, _, _ = data
    promise = promise_for(name)
    if not promise.identical:
        return
    n = honest.shape[0]
    u = torch.from_numpy(np.tile(honest[0], (n, 1)))
    strategy = equip(promise.make(n), promise, u[0].clone(), range(n), [])
    ctx = context(n)
    ctx.local_trainer = strategy.local_trainer
    ctx.global_params = torch.zeros(u.shape[1])
    agg = strategy.aggregate_updates(u, ctx).update
    assert torch.allclose(agg, u[0], rtol=1e-5, atol=1e-6 * (1 + float(u[0].abs().max()))), name


def fit_res(model, pid):
    arrays = [model.astype(np.float32)]
    return None, FitRes(
        Status(Code.OK, ""), ndarrays_to_parameters(arrays), 10, {"partition_id": pid}
    )


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(
    data=hostile_rounds(HOSTILE), broken=st.integers(0, 3), broken_kind=st.sampled_from(NON_FINITE)
)
def test_strategy_round_rejects_non_finite_and_bounds_the_rest(name, data, broken, broken_kind):
    honest, bad, kind, rng = data
    promise = promise_for(name)
    n = honest.shape[0]
    bad = min(bad, promise.tolerates(n))
    finite = honest.copy()
    bad_rows = rng.choice(n, bad, replace=False)
    finite[bad_rows] = hostile_rows(kind, bad, np.delete(honest, bad_rows, 0), rng)
    good = Round(np.delete(honest, bad_rows, 0).astype(np.float64))
    broken_rows = hostile_rows(broken_kind, broken, honest, rng)
    models = np.concatenate([finite, broken_rows]).astype(np.float32)
    pids = rng.permutation(100)[: len(models)]
    init = ndarrays_to_parameters([np.zeros(honest.shape[1], np.float32)])
    strategy = equip(
        promise.make(n),
        promise,
        torch.from_numpy(good.mean.astype(np.float32)),
        pids,
        [int(pids[i]) for i in bad_rows],
    )
    strategy.initial_parameters = init
    strategy.initialize_parameters(None)
    results = [fit_res(models[i], int(pids[i])) for i in rng.permutation(len(models))]
    params, metrics = strategy.aggregate_fit(1, results, [])
    assert metrics["num_rejected"] == broken
    assert params is not None, (name, strategy.diagnostics[1].skipped)
    new = parameters_to_ndarrays(params)[0].astype(np.float64)
    assert np.isfinite(new).all() and torch.isfinite(strategy.global_params).all()
    if promise.bound is not None:
        assert promise.bound(new, good, n, bad), (name, kind, bad, new)


def test_every_registered_name_is_fuzzed():
    """The fuzz list is the registry; names without a promise get the default checks."""
    assert set(NAMES) == set(RULES) | set(WRAPPERS)
    assert set(PROMISES) <= set(NAMES)
