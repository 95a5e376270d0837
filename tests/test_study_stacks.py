"""The software stack reaches the study's evaluation: the evaluators take `stack=`, a stack with host
time per step loses throughput against the ideal one, the weight format follows the stack's native
formats, and the study's stack settings are checked."""
import dataclasses

import pytest

from tapeout.chip import load_chip
from tapeout.dse.objective import Workload, analytic, simulated
from tapeout.dse.space import parse_space
from tapeout.dse.study import DEPLOYED, study_stacks, with_stack
from tapeout.errors import TapeoutError
from tapeout.stack import load_stack

N7 = load_chip("tapeout-n7")
Q7 = Workload("qwen2.5-7b", layouts=((1, 1),), weights=("fp8", "int8"), max_seqs=64, requests=120)


def slow_stack(overhead_s: float):
    """The ideal stack with `overhead_s` of host time per engine step."""
    ideal = load_stack("ideal")
    return dataclasses.replace(ideal, name="slow", overrides={**ideal.overrides, "step_overhead_s": overhead_s})


@pytest.mark.parametrize("evaluate", [analytic, simulated])
def test_host_overhead_of_the_stack_lowers_throughput(evaluate):
    ideal, slow = evaluate(N7, Q7, "ideal"), evaluate(N7, Q7, slow_stack(0.02))
    assert ideal.extra["stack"] == "ideal" and slow.extra["stack"] == "slow"
    assert slow.tok_s_per_chip < 0.9 * ideal.tok_s_per_chip
    assert slow.tpot_s >= 0.02                            # every decode step pays the host time


def test_default_is_the_deployed_stack_and_formats_follow_the_stack():
    assert N7.chip.stack == "cann" and "fp8" not in load_stack("cann").formats
    deployed, ideal = analytic(N7, Q7), analytic(N7, Q7, "ideal")
    assert deployed.extra["stack"] == "cann" and deployed.weights == "int8"   # CANN runs int8 W8A8, not fp8
    assert ideal.weights == "fp8"
    assert analytic(N7, Q7, "cann") == deployed


def test_with_stack_sets_the_deployed_stack_only():
    c = with_stack(N7, "ideal")
    assert c.chip.stack == "ideal" and dataclasses.replace(c, chip=N7.chip) == N7
    assert with_stack(N7, None) is N7


SPACE = {"name": "s", "base": "tapeout-n7", "knobs": {"cores": [8]},
         "workloads": [{"model": "qwen2.5-7b"}]}


@pytest.mark.parametrize("study, msg", [
    ({"stacks": ["deployed", "no-such"]}, "[study] stacks: stack 'no-such': no such software stack"),
    ({"design_stack": "nope"}, "[study] design_stack: stack 'nope'"),
    ({"stacks": ["ideal"], "headline_stack": "deployed"}, "headline_stack 'deployed' must be one of stacks"),
])
def test_study_stack_settings_are_checked(study, msg):
    sp = parse_space({**SPACE, "study": study}, "s.toml")
    with pytest.raises(TapeoutError, match=None) as e:
        study_stacks(sp)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_study_stacks_default_and_shipped_study():
    assert study_stacks(parse_space(SPACE, "s.toml")) == ((DEPLOYED,), DEPLOYED)
    from tapeout.dse.space import load_space

    sp = load_space("inference-7nm")
    assert study_stacks(sp) == (("deployed", "ideal"), "deployed") and sp.study["design_stack"] == "cann"
