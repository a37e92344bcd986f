"""The two-round ``micro`` pipeline config: the one ``tests/conftest.py``'s ``micro_pipeline``
runs once per test run, and the one the pipeline tests re-run and compare with it."""

from configs.instructgpt import get_config


def micro_config():
    config = get_config("micro")
    config.rounds = 2
    return config
