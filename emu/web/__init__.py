"""The live map: a read-only local HTTP server (emu.web.server) over a plan replay or a run (emu.web.source)."""
