"""DWBD as a method: golden and property tests that pin SimVG's balance (w ≈ 0 → pure GT term with
λ_t, w = 1 → pure distillation term, ω = score × IoU detached, no gradient into DB through the weight
or the targets), the baselines (tb-gt: w = 0, fixed-mix: w = 0.5), DB's own DETR loss, and the
two-stage schedule (stage 1 trains DB alone, stage 2 freezes DB)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill.grounding.dwbd import (
    METHODS,
    decoder_loss,
    grounding_loss,
    plan_of,
    set_decoder_frozen,
    token_loss,
)
from distill.grounding.models import GroundingModelSpec, GroundingOutput
from distill.grounding.training import GroundingTrainSpec, build_model, train_model
from distill.grounding.world import GroundingSpec, generate_examples
from distill.losses.boxes import box_cxcywh_to_xyxy, box_iou
from distill.losses.dwbd import detection_loss

GT = torch.tensor([[0.3, 0.4, 0.2, 0.2], [0.7, 0.6, 0.3, 0.1]])
TB = torch.tensor([[0.35, 0.42, 0.2, 0.25], [0.5, 0.5, 0.2, 0.2]])
TB_LOGITS = torch.tensor([[0.3, -0.2], [1.0, 0.5]])


def logits_for(score: torch.Tensor) -> torch.Tensor:
    """Two-class logits whose softmax gives foreground probability ``score`` (B, N)."""
    score = score.clamp(1e-12, 1 - 1e-12)
    return torch.stack([torch.log(score), torch.log1p(-score)], dim=-1)


def output(db_boxes: torch.Tensor, db_scores: torch.Tensor, tb: torch.Tensor = TB) -> GroundingOutput:
    return GroundingOutput(
        tb.clone().requires_grad_(), TB_LOGITS.clone(), [(db_boxes, logits_for(db_scores))]
    )


def test_useless_db_gives_pure_gt_loss_with_lambda_t() -> None:
    db = torch.tensor([[[0.3, 0.4, 0.2, 0.2]], [[0.7, 0.6, 0.3, 0.1]]])  # perfect boxes, score 0
    terms = token_loss(output(db, torch.zeros(2, 1)), GT, plan_of("dwbd"), lambda_t=2.0, lambda_d=1.0)
    expected = 2.0 * detection_loss(TB, GT, pred_logits=TB_LOGITS)
    assert terms.w == pytest.approx(0.0, abs=1e-9)
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms.distill_term.item() == pytest.approx(0.0, abs=1e-6)


def test_perfect_db_gives_pure_distillation_term() -> None:
    db = torch.tensor([[[0.32, 0.41, 0.2, 0.22]], [[0.68, 0.6, 0.3, 0.1]]])
    # w = 1 needs score 1 and IoU 1: then DB's box is the ground truth itself
    terms = token_loss(output(GT.unsqueeze(1), torch.ones(2, 1)), GT, plan_of("dwbd"), 2.0, 1.0)
    assert terms.w == pytest.approx(1.0, abs=1e-6)
    assert terms.gt_term.item() == pytest.approx(0.0, abs=1e-5)
    assert terms.total.item() == pytest.approx(detection_loss(TB, GT, pred_logits=TB_LOGITS).item(), rel=1e-5)
    # an imperfect DB: the distillation target is DB's box, not the ground truth
    scores = torch.tensor([[0.9], [0.6]])
    terms = token_loss(output(db, scores), GT, plan_of("dwbd"), 2.0, 1.0)
    omega = scores[:, 0] * box_iou(box_cxcywh_to_xyxy(db[:, 0]), box_cxcywh_to_xyxy(GT))
    w = omega.mean().item()
    assert terms.w == pytest.approx(w, rel=1e-5) and 0 < w < 1
    gt_loss = detection_loss(TB, GT, pred_logits=TB_LOGITS).item()
    kd_loss = detection_loss(TB, db[:, 0], pred_logits=TB_LOGITS).item()
    assert terms.gt_term.item() == pytest.approx(2.0 * (1 - w) * gt_loss, rel=1e-5)
    assert terms.distill_term.item() == pytest.approx(1.0 * w * kd_loss, rel=1e-5)


def test_fixed_mix_uses_one_half_and_tb_gt_uses_zero() -> None:
    db = torch.tensor([[[0.32, 0.41, 0.2, 0.22]], [[0.6, 0.6, 0.3, 0.1]]])
    scores = torch.tensor([[0.2], [0.95]])
    gt_loss = detection_loss(TB, GT, pred_logits=TB_LOGITS).item()
    kd_loss = detection_loss(TB, db[:, 0], pred_logits=TB_LOGITS).item()
    fixed = token_loss(output(db, scores), GT, plan_of("fixed-mix"), 2.0, 1.0)
    assert fixed.w == 0.5
    assert fixed.gt_term.item() == pytest.approx(2.0 * 0.5 * gt_loss, rel=1e-5)
    assert fixed.distill_term.item() == pytest.approx(1.0 * 0.5 * kd_loss, rel=1e-5)
    only_gt = token_loss(output(db, scores), GT, plan_of("tb-gt"), 2.0, 1.0)
    assert only_gt.w == 0.0 and only_gt.distill_term.item() == 0.0
    assert only_gt.total.item() == pytest.approx(2.0 * gt_loss, rel=1e-5)
    # DB's quality is reported either way
    assert fixed.omega_mean == pytest.approx(only_gt.omega_mean) and fixed.omega_mean > 0


def test_no_gradient_reaches_db_through_weight_or_targets() -> None:
    db_boxes = torch.tensor([[[0.32, 0.41, 0.2, 0.22]], [[0.6, 0.6, 0.3, 0.1]]], requires_grad=True)
    db_logits = logits_for(torch.tensor([[0.7], [0.8]])).requires_grad_()
    for name in ("dwbd", "fixed-mix"):
        tb = TB.clone().requires_grad_()
        out = GroundingOutput(tb, TB_LOGITS.clone().requires_grad_(), [(db_boxes, db_logits)])
        token_loss(out, GT, plan_of(name)).total.backward()
        assert db_boxes.grad is None and db_logits.grad is None
        assert tb.grad is not None and tb.grad.abs().sum() > 0


def test_tb_terms_leave_db_parameters_without_gradient() -> None:
    torch.manual_seed(0)
    model = build_model(GroundingModelSpec(dim=16, heads=2, feedforward=32), 16)
    data = generate_examples(GroundingSpec(image_size=16, objects=2), 4, seed=0)
    out = model(data.images, data.tokens)
    token_loss(out, data.boxes, plan_of("dwbd")).total.backward()
    assert all(parameter.grad is None for parameter in model.decoder_parameters())
    assert any(parameter.grad is not None for parameter in model.token_parameters())


def test_decoder_loss_golden_two_queries() -> None:
    gt = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]])  # query 0 is exact
    logits = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    out = GroundingOutput(gt.clone(), torch.zeros(1, 2), [(boxes, logits)])
    # matched query 0 → class 0 (weight 1); query 1 → no object (weight 0.1): weighted mean CE
    ce0 = -F.log_softmax(logits[0, 0], 0)[0].item()
    ce1 = -F.log_softmax(logits[0, 1], 0)[1].item()
    expected = (1.0 * ce0 + 0.1 * ce1) / 1.1
    assert decoder_loss(out, gt).item() == pytest.approx(expected, rel=1e-5)
    # two decoder layers: the sum of both
    out2 = GroundingOutput(gt.clone(), torch.zeros(1, 2), [(boxes, logits), (boxes, logits)])
    assert decoder_loss(out2, gt).item() == pytest.approx(2 * expected, rel=1e-5)
    assert math.isfinite(decoder_loss(out2, gt, eos_coef=0.0).item())


def test_plans_and_stages() -> None:
    assert METHODS == ("tb-gt", "fixed-mix", "dwbd", "dwbd-2stage")
    assert plan_of("dwbd-2stage").two_stage and not plan_of("dwbd").two_stage
    with pytest.raises(ValueError, match="unknown grounding method 'kd'"):
        plan_of("kd")
    model = build_model(GroundingModelSpec(dim=16, heads=2, feedforward=32), 16)
    data = generate_examples(GroundingSpec(image_size=16, objects=2), 4, seed=0)
    with pytest.raises(ValueError, match="stage"):
        grounding_loss(model, data.images, data.tokens, data.boxes, plan_of("dwbd"), stage=2)
    stage1 = grounding_loss(model, data.images, data.tokens, data.boxes, plan_of("dwbd-2stage"), stage=1)
    assert stage1.parts["tb_gt"] == stage1.parts["tb_kd"] == stage1.parts["w"] == 0.0
    model.zero_grad()
    stage1.total.backward()
    assert all(parameter.grad is None for parameter in model.token_parameters())  # TB not trained


def test_set_decoder_frozen() -> None:
    model = build_model(GroundingModelSpec(dim=16, heads=2, feedforward=32), 16).train()
    set_decoder_frozen(model, True)
    assert not any(parameter.requires_grad for parameter in model.decoder_parameters())
    assert all(parameter.requires_grad for parameter in model.token_parameters())
    assert not model.decoder_layers.training and model.encoder.training
    set_decoder_frozen(model, False)
    assert all(parameter.requires_grad for parameter in model.decoder_parameters())


def test_two_stage_trains_db_alone_then_freezes_it() -> None:
    spec = GroundingSpec(image_size=16, objects=2)
    train = generate_examples(spec, 16, seed=0)
    test = generate_examples(spec, 8, seed=1)
    model_spec = GroundingModelSpec(dim=16, heads=2, feedforward=32)
    torch.manual_seed(5)
    initial = build_model(model_spec, 16)
    snapshots: list[dict[str, torch.Tensor]] = []
    holder: dict[str, object] = {}

    def snapshot(record: dict[str, float]) -> None:
        model = holder["model"]
        assert isinstance(model, torch.nn.Module)
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    # capture the model train_model builds: build_model is called once, after manual_seed(seed)
    import distill.grounding.training as training

    original = training.build_model

    def capturing(*args, **kwargs):  # type: ignore[no-untyped-def]
        holder["model"] = original(*args, **kwargs)
        return holder["model"]

    training.build_model = capturing
    try:
        trained = train_model(
            plan_of("dwbd-2stage"),
            train,
            test,
            GroundingTrainSpec(epochs=1, stage1_epochs=1, batch_size=8, lr=1e-2),
            model_spec,
            seed=5,
            on_epoch=snapshot,
        )
    finally:
        training.build_model = original
    after_stage1, final = snapshots
    start = initial.state_dict()
    decoder = {
        name for name, _ in trained.model.named_parameters() if name.startswith(("decoder_", "db_", "query"))
    }
    token = {name for name, _ in trained.model.named_parameters() if name.startswith(("token_mlp", "tb_"))}
    assert decoder and token
    # stage 1: DB and the encoder learn, TB does not
    assert all(torch.equal(after_stage1[name], start[name]) for name in token)
    assert any(not torch.equal(after_stage1[name], start[name]) for name in decoder)
    # stage 2: DB frozen, TB and the encoder learn
    assert all(torch.equal(final[name], after_stage1[name]) for name in decoder)
    assert any(not torch.equal(final[name], after_stage1[name]) for name in token)
    assert not torch.equal(final["patch_embed.weight"], after_stage1["patch_embed.weight"])
    assert [record["stage"] for record in trained.history] == [1, 2]
    assert trained.history[0]["w"] == 0.0 and trained.history[1]["w"] > 0.0
    assert all(parameter.requires_grad for parameter in trained.model.parameters())  # released
