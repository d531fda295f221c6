"""Test runs only (tests/conftest.py puts this folder on PYTHONPATH): the Slurm executor
plugin polls at the profile's constant `seconds-between-status-checks`.

snakemake-executor-plugin-slurm (2.8) adds 10 s to its polling interval after every
check in which no job finished, up to 180 s. Sensible for hour-long jobs on a busy
cluster; in tests, whose jobs last seconds, it left the test cluster idle for 10-40 s
after each job. Slurm, sbatch and squeue stay real: only how often Snakemake asks
changes. The plugin is patched when (and only if) something imports it."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

PLUGIN = "snakemake_executor_plugin_slurm"


def _constant_polling(module) -> None:
    def interval(executor):
        return executor.workflow.remote_execution_settings.seconds_between_status_checks

    module.Executor.next_seconds_between_status_checks = property(interval, lambda executor, value: None)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != PLUGIN:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _constant_polling(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchOnImport())
