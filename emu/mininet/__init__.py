"""Mininet on a leo-emu constellation: Mininet's own CLI and API on our namespaces.

- :mod:`emu.mininet.requirements`: is Mininet (the Python package and its
  ``mnexec`` helper) installed, and how to install it (pure, no root);
- :mod:`emu.mininet.peers`: which veth is whose peer, read from the kernel;
- :mod:`emu.mininet.node`: ``LeoNode`` / ``LeoIntf`` / ``LeoLink``, Mininet
  objects that *attach* to a run's existing namespaces and never create one;
- :mod:`emu.mininet.net`: ``LeoNet``, a ``mininet.net.Mininet`` whose
  ``start()`` is ``leo-emu up --detach`` and ``stop()`` is ``leo-emu down``;
- :mod:`emu.mininet.cli`: ``LeoCLI``, ``mininet.cli.CLI`` with node names that
  contain ``-`` and a scripted (non-tty) stdin.

Import ``LeoNet`` from :mod:`emu.mininet.net`; this package itself imports no
Mininet, so ``doctor`` can ask whether Mininet is there.
"""
