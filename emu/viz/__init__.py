"""Figures from a plan: data (emu.viz.data), drawing (emu.viz.figures), coastlines, measured RTTs."""
