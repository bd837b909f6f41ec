import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import fastnorm

sys.path.insert(0, os.path.dirname(__file__))  # tests import reference.py as a plain module

settings.register_profile("default", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")


def pytest_report_header(config):
    i = fastnorm.info()
    return f"fastnorm {i['version']}: ISA {i['isa']} (supported {i['supported_isas']}), {i['num_threads']} threads"


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def stream_threshold():
    """Sets the size from which outputs are written with streaming stores; restores it afterwards."""
    old = fastnorm._C.stream_threshold()
    yield fastnorm._C.set_stream_threshold
    fastnorm._C.set_stream_threshold(old)


@pytest.fixture
def bn_schedule():
    """Sets the schedule batch norm's training calls take (fastest, by_channel, two_pass); restores it afterwards."""
    old = fastnorm._C.bn_schedule()
    yield fastnorm._C.set_bn_schedule
    fastnorm._C.set_bn_schedule(old)
