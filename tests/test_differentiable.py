"""The torch forms of per-image metrics: equal to the registered metric, and differentiable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from promptsweep import preference, quality, registry
from promptsweep.emphasis import EmphasisConfigError
from promptsweep.search.config import check_differentiable
from promptsweep.toy import world

DIFFERENTIABLE = [metric for metric in registry.metrics_of("image") if metric.torch_form is not None]
WITHOUT_WEIGHTS = [metric for metric in DIFFERENTIABLE if metric.load is None]


def _pictures() -> list[np.ndarray]:
    """Toy-world pictures, clean and degraded, as uint8 RGB."""
    rng = np.random.default_rng(3)
    pictures = []
    for _ in range(4):
        clean, _, _ = world.draw_scene(rng)
        for degradation in world.DEGRADATIONS:
            pictures.append(world.to_uint8(world.apply(clean, (world.Applied(degradation, 0.7),), rng)))
        pictures.append(world.to_uint8(clean))
    return pictures


def _as_tensor(pictures: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).double() / 255.0


def test_some_quality_metrics_have_a_torch_form_and_brisque_has_none() -> None:
    assert DIFFERENTIABLE and all(metric.role == "quality" for metric in DIFFERENTIABLE)
    assert registry.METRICS["brisque"].torch_form is None
    # The learned preference scores have one too, with their weights.
    assert {"aesthetic", "pickscore"} <= {metric.name for metric in DIFFERENTIABLE if metric.load is not None}
    with pytest.raises(ValueError, match="needs its loaded model"):
        registry.METRICS["aesthetic"].differentiable()


@pytest.fixture(scope="module")
def learned_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The aesthetic predictor and PickScore on tiny random CLIP weights in their real layouts."""
    from clip_weights import write_tiny_clip, write_tiny_clip_model, write_tiny_clip_processor
    from test_preference import write_aesthetic_mlp

    root = tmp_path_factory.mktemp("learned")
    write_tiny_clip(root / "clip", projection_dim=preference.AESTHETIC_EMBEDDING_SIZE)
    write_aesthetic_mlp(root / "mlp.pth")
    write_tiny_clip_processor(root / "processor")
    write_tiny_clip_model(root / "model")
    return {
        "aesthetic": preference.load_aesthetic(root / "clip", root / "mlp.pth"),
        "pickscore": preference.load_pickscore(root / "processor", root / "model"),
    }


@pytest.mark.parametrize("name", ["aesthetic", "pickscore"])
def test_a_learned_scores_torch_form_follows_its_score_and_has_a_gradient(learned_models, name: str) -> None:
    """Close to the score computed through the processor's PIL preprocessing
    (which rounds to 8 bits), on pictures of the toy world cut to portrait
    and landscape shapes, so that the resize and the centre crop both act;
    and with a finite, non-zero gradient to the pixels."""
    model = learned_models[name]
    pictures = [picture[:, 16:] if index % 2 else picture[40:] for index, picture in enumerate(_pictures()[:6])]
    if name == "aesthetic":
        expected = np.array(preference.aesthetic_scores(model, pictures))
    else:
        expected = np.array(preference.pickscore_scores(model, pictures, ["a red house"] * len(pictures)))
    values = []
    for picture in pictures:
        image = _as_tensor([picture]).float().requires_grad_(True)
        value = registry.METRICS[name].differentiable(model)(image, "a red house")
        value.sum().backward()
        assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
        values.append(float(value))
    # Within 2% of how much the pictures' scores differ (0.2% and 0.4% measured).
    np.testing.assert_allclose(values, expected, atol=0.02 * np.ptp(expected))


@pytest.mark.parametrize("metric", WITHOUT_WEIGHTS, ids=lambda metric: metric.name)
def test_the_torch_form_equals_the_registered_metric(metric: registry.Metric) -> None:
    pictures = _pictures()
    measure = getattr(quality, metric.name)
    expected = np.array([measure(picture) for picture in pictures])
    found = metric.differentiable()(_as_tensor(pictures), "unused").numpy()
    # Only the rounding of the gray image to 8 bits differs.
    np.testing.assert_allclose(found, expected, rtol=0.02, atol=0.02 * np.median(expected))


@pytest.mark.parametrize("metric", WITHOUT_WEIGHTS, ids=lambda metric: metric.name)
def test_a_gradient_step_raises_the_metric(metric: registry.Metric) -> None:
    images = _as_tensor(_pictures()[:3]).clamp(0.05, 0.95).requires_grad_(True)
    form = metric.differentiable()
    values = form(images, "unused")
    values.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    stepped = images.detach() + 1e-3 * images.grad / images.grad.abs().amax()
    assert (form(stepped, "unused") > values.detach()).all()


def test_the_gradient_optimiser_refuses_an_objective_without_a_torch_form() -> None:
    check_differentiable("sharpness", ["random", "gradient"])
    check_differentiable("brisque", ["random", "cmaes"])
    with pytest.raises(EmphasisConfigError, match="emphasis.search.objective: 'brisque'") as error:
        check_differentiable("brisque", ["gradient"])
    assert "sharpness" in str(error.value)
