"""Handover events per user terminal and their rates, under one association.

spec: inter-sno-mobility-framework §3.3 (inter-SNO handovers: a user moving
between satellites tied to different SNO cores), §4.3 (keep users with their
home SNO), §5.1 (the baseline inter-SNO handover procedure they trigger).

Inputs are ``ut_serving[k, u]`` (serving satellite, -1: none visible),
``home[u]`` and ``core[k, s]`` from :mod:`emu.plan.association`. A user's
state in a served slice is (satellite, core). Between two consecutive
*served* slices of one user (an outage in between is skipped over, and
counted apart):

- ``intra``: the serving satellite changes, the serving core does not;
- ``inter``: the serving core changes (with or without a satellite change;
  without one it is a re-association of the user's satellite, counted in
  ``reassociations`` too). Inter events are split into ``leave_home``
  (home -> visited), ``return_home`` (visited -> home) and
  ``visited_to_visited``.

Rates are per served user-hour: the slices in which a user terminal has a
serving satellite, times the slice length. ``home_share`` is the fraction
of served user-slices at the home core.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from emu.plan.association import POLICIES, serving_core, user_view

# what the report gives per user terminal and policy
UT_KEYS = ("intra", "inter", "intra_per_user_hour", "inter_per_user_hour", "home_share")
EVENT_DTYPE = np.dtype([("k", "<i4"), ("ut", "<i4"), ("from_sat", "<i4"), ("to_sat", "<i4"),
                        ("from_core", "<i2"), ("to_core", "<i2"), ("inter", "?")])


def events(ut_serving: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Every handover as an EVENT_DTYPE row, ordered by slice then user terminal."""
    sc = serving_core(core, ut_serving)
    out = []
    for u in range(ut_serving.shape[1]):
        ks = np.nonzero(ut_serving[:, u] >= 0)[0]
        if len(ks) < 2:
            continue
        sat, cr = ut_serving[ks, u], sc[ks, u]
        change = (sat[1:] != sat[:-1]) | (cr[1:] != cr[:-1])
        i = np.nonzero(change)[0]
        ev = np.zeros(len(i), dtype=EVENT_DTYPE)
        ev["k"], ev["ut"] = ks[i + 1], u
        ev["from_sat"], ev["to_sat"] = sat[i], sat[i + 1]
        ev["from_core"], ev["to_core"] = cr[i], cr[i + 1]
        ev["inter"] = cr[i] != cr[i + 1]
        out.append(ev)
    ev = np.concatenate(out) if out else np.zeros(0, dtype=EVENT_DTYPE)
    return ev[np.lexsort((ev["ut"], ev["k"]))]


@dataclass
class Rates:
    """Counts and per-user-hour rates of one association policy."""

    intra: int = 0
    inter: int = 0
    leave_home: int = 0
    return_home: int = 0
    visited_to_visited: int = 0
    reassociations: int = 0
    outages: int = 0  # returns to service after slices with no visible satellite
    served_slices: int = 0
    home_slices: int = 0
    user_hours: float = 0.0
    per_ut: list[dict] = field(default_factory=list)

    @property
    def intra_per_user_hour(self) -> float:
        return self.intra / self.user_hours if self.user_hours else 0.0

    @property
    def inter_per_user_hour(self) -> float:
        return self.inter / self.user_hours if self.user_hours else 0.0

    @property
    def home_share(self) -> float:
        return self.home_slices / self.served_slices if self.served_slices else 0.0

    def summary(self) -> dict:
        return {"intra_per_user_hour": round(self.intra_per_user_hour, 4),
                "inter_per_user_hour": round(self.inter_per_user_hour, 4),
                "intra": self.intra, "inter": self.inter, "leave_home": self.leave_home,
                "return_home": self.return_home, "visited_to_visited": self.visited_to_visited,
                "reassociations": self.reassociations, "outages": self.outages,
                "served_slices": self.served_slices, "home_slices": self.home_slices,
                "home_share": round(self.home_share, 4), "user_hours": round(self.user_hours, 4)}


def rates(ut_serving: np.ndarray, home: np.ndarray, core: np.ndarray, slice_s: float,
          names: list[str] | None = None) -> Rates:
    """Count :func:`events` and normalise them per served user-hour."""
    ev = events(ut_serving, core)
    sc = serving_core(core, ut_serving)
    served = ut_serving >= 0
    at_home = served & (sc == home[None, :])
    inter = ev[ev["inter"]]
    fh = home[inter["ut"]]
    r = Rates(intra=int((~ev["inter"]).sum()), inter=len(inter),
              leave_home=int(((inter["from_core"] == fh) & (inter["to_core"] != fh)).sum()),
              return_home=int(((inter["from_core"] != fh) & (inter["to_core"] == fh)).sum()),
              reassociations=int((inter["from_sat"] == inter["to_sat"]).sum()),
              outages=int((served[1:] & ~served[:-1] & (np.cumsum(served, axis=0)[:-1] > 0)).sum()),
              served_slices=int(served.sum()), home_slices=int(at_home.sum()),
              user_hours=float(served.sum()) * slice_s / 3600.0)
    r.visited_to_visited = r.inter - r.leave_home - r.return_home
    for u in range(ut_serving.shape[1]):
        mine = ev[ev["ut"] == u]
        hours = float(served[:, u].sum()) * slice_s / 3600.0
        n_intra, n_inter = int((~mine["inter"]).sum()), int(mine["inter"].sum())
        r.per_ut.append({"ut": names[u] if names else u, "home": int(home[u]), "intra": n_intra, "inter": n_inter,
                         "intra_per_user_hour": round(n_intra / hours, 4) if hours else 0.0,
                         "inter_per_user_hour": round(n_inter / hours, 4) if hours else 0.0,
                         "served_hours": round(hours, 4), "home_share":
                         round(float(at_home[:, u].sum()) / max(1, int(served[:, u].sum())), 4)})
    return r


def reduction(owner: Rates, dynamic: Rates) -> float | None:
    """Fraction of the owner policy's inter-SNO handovers per user-hour that dynamic avoids (None if owner has none)."""
    if owner.inter_per_user_hour == 0:
        return None
    return round(1.0 - dynamic.inter_per_user_hour / owner.inter_per_user_hour, 4)


def handover_report(db, with_events: bool = False) -> dict:
    """The JSON document of ``leo-emu handovers`` (and the numbers of ``leo-emu plot PLAN.db handovers``)
    from an open :class:`emu.plan.db.PlanDB`: per policy the :meth:`Rates.summary`, per user terminal its
    counts and rates under each policy."""
    serving = np.stack([db.serving(k) for k in range(db.n_slices)])
    cols, ut_serving, home = user_view(serving, [g.kind for g in db.ground], np.array([g.operator for g in db.ground]))
    names = [db.ground[int(c)].name for c in cols]
    cores = {p: db.association(p) for p in POLICIES}
    by_pol = {p: rates(ut_serving, home, cores[p], db.slice_s, names) for p in POLICIES}
    out: dict = {p: by_pol[p].summary() for p in POLICIES}
    out["reduction"] = reduction(by_pol["owner"], by_pol["dynamic"])
    out["configured"] = json.loads(db.meta["routing"]).get("association", "owner")
    out["scenario"] = db.meta.get("scenario_name")
    out["slices"] = db.n_slices
    out["slice_s"] = db.slice_s
    out["user_terminals"] = len(cols)
    out["operators"] = [o[1] for o in db.operators]
    out["per_ut"] = [{"ut": a["ut"], "home": out["operators"][a["home"]],
                      **{p: {key: by_pol[p].per_ut[i][key] for key in UT_KEYS}
                         for p in POLICIES}, "served_hours": a["served_hours"]}
                     for i, a in enumerate(by_pol["owner"].per_ut)]
    if with_events:
        ops, sats = out["operators"], db.sat_names
        out["events"] = {p: [{"slice": int(e["k"]), "time_s": round(int(e["k"]) * db.slice_s, 3),
                              "ut": names[int(e["ut"])], "kind": "inter" if e["inter"] else "intra",
                              "from_sat": sats[int(e["from_sat"])], "to_sat": sats[int(e["to_sat"])],
                              "from_core": ops[int(e["from_core"])], "to_core": ops[int(e["to_core"])]}
                             for e in events(ut_serving, cores[p])] for p in POLICIES}
    return out
