"""``steerplug demo``: the shipped recipes on the embedded demo model, baseline vs steered, measured."""

from steerplug.demo_cli.run import DemoRow, failures, run_demo, shipped_recipes

__all__ = ["DemoRow", "failures", "run_demo", "shipped_recipes"]
