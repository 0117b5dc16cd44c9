"""``LeoCLI``: Mininet's own ``mininet.cli.CLI`` on a :class:`~emu.mininet.net.LeoNet` (issue 11).

Everything is Mininet's (``nodes``, ``links``, ``net``, ``dump``, ``pingall``,
``iperf``, ``xterm``, ``py``, ``<node> <command>``) except three things:

- node names such as ``sat0-0-2`` or ``gs-london`` contain ``-``, which
  ``cmd.Cmd`` does not count as part of a command word;
- with a scripted (non-tty) stdin, Mininet forwards stdin to the running
  node command, which would feed the script's next lines to that node's
  shell: here a node command gets no stdin unless a person is typing;
- in a script, a line naming no command and no node ends the session with
  one error line (the caller exits 2); typed, it is Mininet's message.
"""

from __future__ import annotations

from mininet.cli import CLI
from mininet.log import output


class LeoCLI(CLI):
    identchars = CLI.identchars + "-."

    def __init__(self, mininet, *args, **kwargs):
        self.failed: str | None = None
        CLI.__init__(self, mininet, *args, **kwargs)

    def default(self, line):
        first, _args, _line = self.parseline(line)
        if first not in self.mn and not self.isatty():
            view = getattr(self.mn, "view", None)
            try:
                if view is not None:
                    view.node(first or line.strip())
                self.failed = f"unknown command or node (got {line.strip()!r})"
            except Exception as exc:  # the run's own "no such node" message
                self.failed = str(exc)
            return True  # stop the session
        return CLI.default(self, line)

    def waitForNode(self, node):
        if self.isatty():
            return CLI.waitForNode(self, node)
        while node.waiting:
            output(node.monitor(timeoutms=1000))

    def do_net(self, _line):
        "List network connections (node interface:peer-node:peer-interface), as the kernel has them now."
        self.mn.refresh()
        self.mn.links  # noqa: B018 -- pairs the veths, sets each interface's link
        for node in self.mn.values():
            ends = []
            for intf in node.intfList():
                link = intf.link
                peer = (link.intf2 if link.intf1 is intf else link.intf1) if link else None
                ends.append("%s:%s" % (intf.name, "%s:%s" % (peer.node.name, peer.name) if peer else ""))
            output("%s %s\n" % (node.name, " ".join(ends)))

    def do_links(self, line):
        "Report on links (veth pairs, read from the kernel now)."
        self.mn.refresh()
        return CLI.do_links(self, line)

    def do_refresh(self, _line):
        "Re-read interfaces and links from the kernel (ground links change with the slices)."
        self.mn.refresh()

    def do_status(self, _line):
        "The run's slice and controller state (as `leo-emu status` sees it)."
        view = self.mn.view
        st = view.status()
        output("run %s: state %s, slice %s, controller %s\n" % (
            view.run.run_id, st.get("state"), st.get("slice"), "alive" if view.controller_alive() else "gone"))

    def do_EOF(self, line):
        if self.isatty():
            output("\n")
        return True

    def emptyline(self):
        return None

