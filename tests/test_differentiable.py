"""The torch forms of per-image metrics: equal to the registered metric, and differentiable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from promptsweep import quality, registry
from promptsweep.emphasis import EmphasisConfigError
from promptsweep.search.config import check_differentiable
from promptsweep.toy import world

DIFFERENTIABLE = [metric for metric in registry.metrics_of("image") if metric.torch_form is not None]


def _pictures() -> list[np.ndarray]:
    """Toy-world pictures, clean and degraded, as uint8 RGB."""
    rng = np.random.default_rng(3)
    pictures = []
    for _ in range(4):
        clean, _, _ = world.draw_scene(rng)
        for degradation in world.DEGRADATIONS:
            pictures.append(world.to_uint8(degradation.apply(clean, rng)))
        pictures.append(world.to_uint8(clean))
    return pictures


def _as_tensor(pictures: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).double() / 255.0


def test_some_quality_metrics_have_a_torch_form_and_brisque_has_none() -> None:
    assert DIFFERENTIABLE and all(metric.role == "quality" for metric in DIFFERENTIABLE)
    assert registry.METRICS["brisque"].torch_form is None


@pytest.mark.parametrize("metric", DIFFERENTIABLE, ids=lambda metric: metric.name)
def test_the_torch_form_equals_the_registered_metric(metric: registry.Metric) -> None:
    pictures = _pictures()
    measure = getattr(quality, metric.name)
    expected = np.array([measure(picture) for picture in pictures])
    found = metric.differentiable()(_as_tensor(pictures)).numpy()
    # Only the rounding of the gray image to 8 bits differs.
    np.testing.assert_allclose(found, expected, rtol=0.02, atol=0.02 * np.median(expected))


@pytest.mark.parametrize("metric", DIFFERENTIABLE, ids=lambda metric: metric.name)
def test_a_gradient_step_raises_the_metric(metric: registry.Metric) -> None:
    images = _as_tensor(_pictures()[:3]).clamp(0.05, 0.95).requires_grad_(True)
    form = metric.differentiable()
    values = form(images)
    values.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    stepped = images.detach() + 1e-3 * images.grad / images.grad.abs().amax()
    assert (form(stepped) > values.detach()).all()


def test_the_gradient_optimiser_refuses_an_objective_without_a_torch_form() -> None:
    check_differentiable("sharpness", ["random", "gradient"])
    check_differentiable("brisque", ["random", "cmaes"])
    with pytest.raises(EmphasisConfigError, match="emphasis.search.objective: 'brisque'") as error:
        check_differentiable("brisque", ["gradient"])
    assert "sharpness" in str(error.value)
