"""leo-emu: a real-packet emulator of LEO satellite networks on Linux network namespaces."""

__version__ = "0.1.0"
