"""The Avalanche bridge: cl's evaluation inside Avalanche scripts, Avalanche benchmarks as cl
streams, Avalanche strategies on cl streams.

`from cl.avalanche import ContinualEvaluation` is the plugin (cl/avalanche/plugin.py);
importing this package alone imports neither Avalanche nor torch.
"""

__all__ = ["ContinualEvaluation", "MonitorPlugin"]


def __getattr__(name: str):
    if name == "ContinualEvaluation":
        from cl.avalanche.plugin import ContinualEvaluation

        return ContinualEvaluation
    if name == "MonitorPlugin":
        from cl.avalanche.hook import MonitorPlugin

        return MonitorPlugin
    raise AttributeError(f"module 'cl.avalanche' has no attribute {name!r}")
