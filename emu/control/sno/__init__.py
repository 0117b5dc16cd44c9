"""Inter-SNO mobility control plane: registration protocol, core daemons, user-terminal agents.

spec: inter-sno-mobility §4.2 (independent SNO cores), §5.1 (baseline
inter-SNO handover), §5.2 / Figure 5 (proactive authentication and
tunnelling). The protocol is documented in ``docs/sno-protocol.md``.

Modules, one job each:

- :mod:`wire`: message types and their binary encoding (pure);
- :mod:`auth`: HMAC-SHA256 challenge-response, session keys, replay windows (pure);
- :mod:`logic`: the core's procedures as a state machine, events in, actions out (pure);
- :mod:`agent_logic`: the user terminal's side (pure);
- :mod:`kernel`: kernel operations (tunnels, routes, rules) rendered to ``ip -batch`` lines;
- :mod:`pki`: the per-run CA and TLS contexts of the inter-core channel;
- :mod:`config`: daemon configuration files;
- :mod:`core`, :mod:`agent`: the daemons (``python -m emu.control.sno.core CONFIG``);
- :mod:`daemon`: what both daemons share: the entry point and the JSON-lines admin socket;
- :mod:`launch`: writes keys, certificates, configurations and starts the supervised daemons of a run;
- :mod:`rig`: a small rig (two cores, two GS, one UT) for handover experiments.
"""
