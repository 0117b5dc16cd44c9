"""BGP mobile routing with real daemons (spec: bgp-mobile-routing-atn).

- :mod:`.model`: pure inputs -> one :class:`~.model.Router` per BGP speaker (roles, peerings, timers);
- :mod:`.render`: pure, one BIRD 2 configuration per router (c-ASBR, s-ASBR) and the s-ASBR's MNP file;
- :mod:`.birdc`: control-socket queries (``show protocols``, ``show route count``) and their parsers;
- :mod:`.daemon`: one BIRD process inside a namespace: check, start (journaled), stop, restart;
- :mod:`.launch`: the entry point: start every router of a network for a run, move MNPs, stop.
"""
