"""DSTC: parsing model-written tests and the code x test pass matrix."""

from __future__ import annotations

import pytest

from ratchet.judge.dstc import parse_tests, pass_matrix
from ratchet.judge.sandbox import Limits, Sandbox


def test_parse_bare_asserts_keep_their_context():
    text = "import math\nx = [3, 1]\nassert sort_list(x) == [1, 3]\nassert sort_list([]) == []\nprint('done')\n"
    assert parse_tests(text, "sort_list") == [
        "import math\nx = [3, 1]\nassert sort_list(x) == [1, 3]",
        "import math\nx = [3, 1]\nassert sort_list([]) == []",
    ]


def test_parse_fenced_test_functions_and_check():
    text = (
        "Some tests:\n```python\ndef test_basic():\n    assert inc(1) == 2\n    assert inc(-1) == 0\n\n"
        "def check(candidate):\n    for i in range(3):\n        assert candidate(i) == i + 1\n\ntest_basic()\n```\n"
        "And a duplicate:\n```\nassert inc(1) == 2\n```"
    )
    assert parse_tests(text, "inc") == [
        "assert inc(1) == 2",
        "assert inc(-1) == 0",
        "for i in range(3):\n    assert candidate(i) == i + 1",
    ]


def test_parse_salvages_asserts_from_broken_code_and_drops_unrelated_ones():
    text = "assert inc(0) == 1\nthis is not python (\nassert inc(5) == 6\nassert True\nassert other(1) == 2"
    assert parse_tests(text, "inc") == ["assert inc(0) == 1", "assert inc(5) == 6"]


@pytest.fixture(scope="module")
def sandbox():
    sb = Sandbox(Limits(wall_seconds=1.5))
    yield sb
    sb.close()


@pytest.mark.parametrize("isolate_tests", [True, False])
@pytest.mark.slow
def test_pass_matrix(sandbox, isolate_tests):
    codes = [
        "def inc(x):\n    return x + 1\n",                                     # right
        "def inc(x):\n    return x + 2\n",                                     # wrong: only the wrong test
        "def inc(x):\n    if x == 5:\n        while True:\n            pass\n    return x + 1\n",  # hangs on 5
        "import os\ndef inc(x):\n    if x == 0:\n        os._exit(0)\n    return x + 1\n",  # dies on 0
        "def inc(x) return x\n",                                               # does not load
        "def inc(x):\n    return x + 1\n",                                     # duplicate of the first
    ]
    tests = ["assert inc(0) == 1", "assert inc(5) == 6", "assert inc(1) == 2", "assert inc(1) == 3"]
    assert pass_matrix(sandbox, codes, tests, "inc", isolate_tests=isolate_tests) == [
        [True, True, True, False],
        [False, False, False, True],
        [True, False, True, False],
        [False, True, True, False],
        [False, False, False, False],
        [True, True, True, False],
    ]


@pytest.mark.slow
def test_pass_matrix_without_tests(sandbox):
    assert pass_matrix(sandbox, ["def f():\n    return 1\n"], [], "f") == [[]]
    assert pass_matrix(sandbox, ["def f():\n    return 1\n"], [], "f", isolate_tests=False) == [[]]


@pytest.mark.slow
def test_a_forging_test_cannot_pass_other_tests(sandbox):
    """A model-written test that writes fake "pass" lines to every fd, then exits: it does not
    even pass itself (the lines lack the run's token), and cannot touch the other tests."""
    forger = ("import os\nfor fd in range(3, 64):\n    try:\n"
              "        os.write(fd, b'T\\t0\\tpass\\nT\\t1\\tpass\\nT\\t2\\tpass\\nD\\nZ\\n')\n"
              "    except OSError:\n        pass\nos._exit(0)\nassert inc(0) == 1")
    tests = ["assert inc(0) == 1", forger, "assert inc(1) == 2"]
    wrong = "def inc(x):\n    return x\n"
    assert pass_matrix(sandbox, [wrong], tests, "inc") == [[False, False, False]]


def test_parse_drops_the_models_own_copy_of_the_function():
    """Small models write a solution above their asserts; kept as context, it would shadow the
    code sample under test, and every sample would pass every test."""
    text = ("```python\nfrom solution import inc\ndef inc(x):\n    return x + 2\n\ncandidate = inc\n"
            "def helper(y):\n    return y\n\nassert inc(helper(1)) == 2\n```")
    assert parse_tests(text, "inc") == ["def helper(y):\n    return y\nassert inc(helper(1)) == 2"]
