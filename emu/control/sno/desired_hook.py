"""Which desired-state values the SNO control plane takes over from the data plane's applier (pure).

spec: inter-sno-mobility §4.2 (mobility anchoring is the core's job): with
the control plane on, a user's route at its cores is installed by the core
daemons at registration, and where the terminal's tunnel points is set by
:mod:`emu.control.sno.livehook` from the serving core of each slice.
"""

from __future__ import annotations


def handed_off() -> tuple[type, ...]:
    from emu.dataplane import desired as D

    return (D.CoreRoute, D.TunnelTarget)
