import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from distill.losses import mutual_learning_loss


@given(peers=st.integers(2, 5), seed=st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_when_all_peers_agree_the_loss_is_plain_cross_entropy(peers, seed):
    torch.manual_seed(seed)
    logits = torch.randn(6, 4)
    targets = torch.randint(0, 4, (6,))
    cohort = [logits.clone() for _ in range(peers)]
    cross_entropy, mimicry = mutual_learning_loss(cohort, targets, index=peers - 1)
    torch.testing.assert_close(cross_entropy, F.cross_entropy(logits, targets))
    assert mimicry.item() == pytest.approx(0.0, abs=1e-6)


def test_golden_value_for_two_peers():
    # peer 0 uniform over 2 classes, peer 1 certain-ish: KL(p1 || p0) by hand
    peer0 = torch.tensor([[0.0, 0.0]])
    peer1 = torch.tensor([[2.0, 0.0]])
    q = torch.softmax(peer1[0], 0)
    expected = float((q * (q.log() - torch.log(torch.tensor([0.5, 0.5])))).sum())
    _, mimicry = mutual_learning_loss([peer0, peer1], torch.tensor([0]), index=0)
    assert mimicry.item() == pytest.approx(expected, rel=1e-6)


def test_mimicry_is_the_mean_over_the_other_peers():
    torch.manual_seed(0)
    cohort = [torch.randn(5, 3) for _ in range(3)]
    targets = torch.randint(0, 3, (5,))
    _, mean_term = mutual_learning_loss(cohort, targets, index=0)
    pairwise = [mutual_learning_loss([cohort[0], cohort[other]], targets, 0)[1] for other in (1, 2)]
    torch.testing.assert_close(mean_term, (pairwise[0] + pairwise[1]) / 2)


def test_gradient_flows_only_into_the_peer_being_trained():
    cohort = [torch.randn(4, 3, requires_grad=True) for _ in range(3)]
    cross_entropy, mimicry = mutual_learning_loss(cohort, torch.tensor([0, 1, 2, 0]), index=1)
    (cross_entropy + mimicry).backward()
    assert cohort[1].grad is not None
    assert cohort[0].grad is None and cohort[2].grad is None


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least 2 peers"):
        mutual_learning_loss([torch.zeros(2, 3)], torch.zeros(2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="peer index 2 outside a cohort of 2"):
        mutual_learning_loss([torch.zeros(2, 3)] * 2, torch.zeros(2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="disagree"):
        mutual_learning_loss([torch.zeros(2, 3), torch.zeros(2, 4)], torch.zeros(2, dtype=torch.long), 0)
