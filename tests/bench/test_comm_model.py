"""The gradient-synchronization cost model: golden values, the paper's ratios, and its source."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.bench.comm import (
    Network,
    bml,
    compare,
    fat_tree_switches,
    paper_claims,
    parameter_server,
    ring_all_reduce,
    sweep,
)
from distill.engine.bcube import BCube, bml_plan


def test_golden_values_on_the_papers_testbed_worked_by_hand():
    """BCube(3,1), 18,000 float32 elements (no padding), 1 Gbit/s = 1.25e8 B/s, 10 µs/message.

    BML: slices of 9,000; the four steps send 6,000, 2,000, 2,000, 6,000 elements on a NIC in 2
    messages: 2·(20 + 192) + 2·(20 + 64) = 592 µs. PS: two stages of 8 messages carrying
    8 · 8,000 B: 2·(80 + 512) = 1,184 µs. Ring: 16 stages of (10 + 64) µs = 1,184 µs."""
    cube, network = BCube(3, 2), Network(bandwidth_gbps=1.0, latency_us=10.0)
    estimates = compare(18_000, cube, network)
    assert estimates["bml"].seconds == pytest.approx(592e-6, rel=1e-12)
    assert estimates["ps"].seconds == pytest.approx(1184e-6, rel=1e-12)
    assert estimates["ring"].seconds == pytest.approx(1184e-6, rel=1e-12)
    assert [estimates[name].stages for name in ("ps", "ring", "bml")] == [2, 16, 4]
    assert estimates["bml"].switches == 6 and estimates["ps"].switches == pytest.approx(15.0)


@pytest.mark.parametrize(("ports", "levels"), [(3, 2), (2, 3), (10, 3), (32, 2), (4, 4), (6, 5)])
def test_the_papers_ratios_one_over_the_levels_and_levels_over_five(ports, levels):
    """GST(BML)/GST(PS) → 1/L and switches(BCube)/switches(Fat-Tree) = L/5 for L levels (the
    paper's 1/k and k/5, k counting the NICs per server)."""
    claims = paper_claims(BCube(ports, levels))
    assert claims["gst_bml_over_ps"] == pytest.approx(1 / levels, rel=1e-4)  # padding to L·N elements
    assert claims["switches_bml_over_fat_tree"] == pytest.approx(levels / 5, rel=1e-12)


@given(ports=st.integers(2, 12), levels=st.integers(2, 4), elements=st.integers(1, 10**7))
@settings(max_examples=80, deadline=None)
def test_bml_moves_the_same_bytes_as_ps_and_is_priced_from_the_hooks_plan(ports, levels, elements):
    cube, network = BCube(ports, levels), Network(25.0, 2.0)
    plan = bml_plan(cube, elements)
    estimate = bml(elements, 4, cube, network)
    # the bandwidth-optimal volume 2(N−1)/N of the (padded) buffer, over all k+1 NICs
    assert estimate.bytes_per_server == pytest.approx(4 * plan.elements_sent_per_server())
    ps = parameter_server(4 * plan.padded_length, cube.servers, network)
    assert estimate.bytes_per_server == pytest.approx(ps.bytes_per_server)
    by_hand = sum(network.seconds(ports - 1, 4 * busiest) for busiest in plan.busiest_nic_per_step())
    assert estimate.seconds == pytest.approx(by_hand)
    assert estimate.seconds <= ps.seconds  # never slower than PS on the same servers


def test_the_model_scales_to_thousands_of_servers():
    estimates = sweep(143_667_240, Network(), max_servers=4096)
    assert max(e.servers for e in estimates) >= 4000
    assert all(math.isfinite(e.seconds) and e.seconds > 0 for e in estimates)
    ring = ring_all_reduce(4e8, 4096, Network())
    assert ring.stages == 2 * 4095
    # latency alone (a near-infinite bandwidth): ring pays 2(N−1) messages, BML 2L·(n−1)
    latency_bound = Network(bandwidth_gbps=1e9, latency_us=5.0)
    assert ring_all_reduce(1e3, 4096, latency_bound).seconds == pytest.approx(8190 * 5e-6, rel=1e-6)
    assert bml(250, 4, BCube(16, 3), latency_bound).seconds == pytest.approx(6 * 15 * 5e-6, rel=1e-6)


def test_bad_networks_and_sizes_are_refused():
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        Network(bandwidth_gbps=0.0)
    with pytest.raises(ValueError, match="latency cannot be negative"):
        Network(latency_us=-1.0)
    with pytest.raises(ValueError, match="at least 2 servers"):
        parameter_server(1e6, 1, Network())
    assert fat_tree_switches(16, 4) == pytest.approx(20.0)  # a 4-ary Fat-Tree: 16 servers, 20 switches
