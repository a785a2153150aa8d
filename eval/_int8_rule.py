"""The INT8 search's measurements and rule: per-group sensitivity, then the greedy search for the FP16 set with the
fewest FP16 MACs whose AP drop against FP32 is within the budget.

Sensitivity of group g (every graph is the real mixed INT8/FP16 graph, run in ONNX Runtime):

- *alone*: only g in INT8, every other group in FP16 -> ``ap_drop_alone`` (AP(FP32) - AP), ``kpt_px_alone``
  (mean keypoint distance to the FP32 graph's, input pixels) and ``noise_alone``: g's share of the all-INT8
  graph's output noise power, ``(e_alone^2 - e_fp16^2) / e_int8^2`` with ``e`` the outputs' relative L2 error
  against FP32;
- *all-but-one*: every group in INT8 but g -> ``ap_gain_fp16`` (AP - AP(all-INT8)), ``kpt_px_fp16`` (the keypoint
  error that keeping g in FP16 removes from the all-INT8 graph's) and ``noise_fp16``: the share of the all-INT8
  output noise power it removes, ``(e_int8^2 - e_kept^2) / e_int8^2``;
- ``harm``: the mean of the two noise shares. Quantisation noise of different layers adds up in power (the shares
  of all groups sum to about 1 from either view, measured on the demo model), so the two views agree and
  ``harm`` is stable where AP on a few hundred people moves in steps and keypoint error in arg-max flips.

Search (:func:`search_fp16_set`):

1. groups whose *alone* AP drop already exceeds the budget are *forced* into FP16 (quantising one of them alone
   breaks the budget, so no INT8 set can hold it; with a budget of 0 that is every group that measurably hurts);
2. starting from the forced set, add the other groups in order of harm per MAC (most output noise removed per
   FP16 MAC first; groups without measured harm last, smallest first), measuring the AP after each, until the
   drop is within the budget;
3. then try to give each added group back to INT8, largest first, keeping every removal that stays within the
   budget;
4. the answer is, among every measured set that contains the forced groups and meets the budget (the search's and
   the all-but-one sets), the one with the fewest FP16 MACs (then the higher AP). When none meets it, the measured
   set with the best AP, flagged as not meeting the budget. Sets without a forced group are never the answer even
   when they score within the budget: a group's loss alone, everything else in FP16, is the cleaner measurement,
   and a combination that happens to score well around it on a few hundred people is not trusted.

Every measurement goes through the evaluator's cache and budget: a spent budget stops the search where it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ._int8_eval import BudgetSpent, SetEvaluator

__all__ = ["Sensitivity", "SearchResult", "measure_sensitivity", "search_fp16_set", "fp16_macs"]

_EPS = 1e-9


@dataclass
class Sensitivity:
    """One group's measurements (None: not measured, the budget ran out)."""

    ap_drop_alone: float | None = None
    kpt_px_alone: float | None = None
    noise_alone: float | None = None
    ap_gain_fp16: float | None = None
    kpt_px_fp16: float | None = None
    noise_fp16: float | None = None
    harm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SearchResult:
    """The chosen FP16 set (group indices), whether it meets the budget, the forced groups, the search path
    (``kind`` start / add / prune, the set, its result) and why the search stopped early (None: it did not)."""

    chosen: list[int]
    result: dict[str, Any]
    met: bool
    forced: list[int]
    path: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None


def fp16_macs(groups: Sequence[Any], fp16: Sequence[int]) -> int:
    return sum(groups[i].macs for i in set(fp16))


def measure_sensitivity(ev: SetEvaluator, ap_fp32: float, all_int8: dict[str, Any], all_fp16: dict[str, Any],
                        on_group: Any = None) -> tuple[list[Sensitivity], str | None]:
    """Each group's :class:`Sensitivity` (alone and all-but-one graphs, group by group) and why the measurement
    stopped early (None when complete). ``on_group(i)`` is called before each group."""
    n = len(ev.groups)
    every = set(range(n))
    out = [Sensitivity() for _ in range(n)]
    key = ev.metric  # AP; PCKh on MPII
    ap_int8, kpt_int8 = all_int8["metrics"][key], all_int8["kpt_px"]
    p_int8, p_fp16 = all_int8["out_rel_l2"] ** 2, all_fp16["out_rel_l2"] ** 2
    share = (lambda p: p / p_int8) if p_int8 > 0 else (lambda p: 0.0)
    stopped = None
    for i in range(n):
        if on_group is not None:
            on_group(i)
        s = out[i]
        try:
            alone = ev.fp16_set(every - {i})
            s.ap_drop_alone, s.kpt_px_alone = ap_fp32 - alone["metrics"][key], alone["kpt_px"]
            s.noise_alone = share(alone["out_rel_l2"] ** 2 - p_fp16)
            kept = ev.fp16_set({i})
            s.ap_gain_fp16, s.kpt_px_fp16 = kept["metrics"][key] - ap_int8, kpt_int8 - kept["kpt_px"]
            s.noise_fp16 = share(p_int8 - kept["out_rel_l2"] ** 2)
        except BudgetSpent as e:
            stopped = str(e)
        views = [v for v in (s.noise_alone, s.noise_fp16) if v is not None]
        s.harm = sum(views) / len(views) if views else None
        if stopped:
            break
    return out, stopped


def search_fp16_set(ev: SetEvaluator, sens: Sequence[Sensitivity], ap_fp32: float, max_ap_drop: float
                    ) -> SearchResult:
    """The FP16 set of the rule in the module docstring."""
    groups = ev.groups

    def ok(r: dict[str, Any]) -> bool:
        return ap_fp32 - r["metrics"][ev.metric] <= max_ap_drop + _EPS

    forced = [i for i, s in enumerate(sens) if s.ap_drop_alone is not None and s.ap_drop_alone > max_ap_drop + _EPS]
    path: list[dict[str, Any]] = []
    stopped = None

    def measure(fp16: set[int], kind: str) -> dict[str, Any]:
        r = ev.fp16_set(fp16)
        path.append(dict(kind=kind, fp16=sorted(fp16), result=r))
        return r

    current = set(forced)
    try:
        r = measure(current, "start")
        order = sorted((i for i in range(len(groups)) if i not in current), key=lambda i: _add_key(sens[i], groups[i]))
        while not ok(r) and order:
            current.add(order.pop(0))
            r = measure(current, "add")
        if ok(r):
            for i in sorted(current - set(forced), key=lambda i: -groups[i].macs):
                trial = measure(current - {i}, "prune")
                if ok(trial):
                    current.discard(i)
    except BudgetSpent as e:
        stopped = str(e)
    chosen, result, met = _choose(ev, forced, ok)
    return SearchResult(chosen=chosen, result=result, met=met, forced=forced, path=path, stopped=stopped)


def _add_key(s: Sensitivity, group: Any) -> tuple[int, float]:
    """Sort key of the add step: harmful groups by harm per MAC (descending), then the rest smallest first."""
    if s.harm is not None and s.harm > 0:
        return 0, -s.harm / max(group.macs, 1)
    return (1 if s.harm is not None else 2), float(group.macs)


def _choose(ev: SetEvaluator, forced: Sequence[int], ok: Any) -> tuple[list[int], dict[str, Any], bool]:
    """Among the measured FP16 sets holding ``forced``: the fewest FP16 MACs meeting the budget, else the best
    AP."""
    groups, need = ev.groups, set(forced)
    measured = []
    for tag, r in ev.results.items():
        if tag == "fp32" or not all(p.isdigit() for p in tag.split(",") if p):
            continue
        fp16 = [int(p) for p in tag.split(",") if p]
        if need <= set(fp16) and all(i < len(groups) for i in fp16):
            measured.append((fp16, r))
    if not measured:
        raise RuntimeError("the INT8 search measured no FP16 set holding the forced groups")
    good = [(f, r) for f, r in measured if ok(r)]
    if good:
        f, r = min(good, key=lambda fr: (fp16_macs(groups, fr[0]), -fr[1]["metrics"][ev.metric], len(fr[0])))
        return f, r, True
    f, r = max(measured, key=lambda fr: (fr[1]["metrics"][ev.metric], -fp16_macs(groups, fr[0])))
    return f, r, False
