"""/v1/models: what can be put in params.model."""

from __future__ import annotations

from fastapi import APIRouter

from lrpseg.registry import ModelInfo, RegistryError
from schemas.models import ModelList, ModelOut
from schemas.problems import Problem
from service.deps import RegistryDep
from service.errors import ApiError

router = APIRouter(prefix="/v1", tags=["models"])


def model_out(info: ModelInfo, default_id: str) -> ModelOut:
    return ModelOut(
        id=info.id,
        name=info.name,
        version=info.version,
        kind=info.kind,
        family=info.family,
        in_channels=info.in_channels,
        num_classes=info.num_classes,
        class_names=list(info.class_names),
        input_size=info.input_size,
        zbox_bounds=(float(info.zbox_bounds[0]), float(info.zbox_bounds[1])),
        description=info.description,
        default=info.id == default_id,
    )


@router.get("/models", response_model=ModelList)
def list_models(registry: RegistryDep) -> ModelList:
    default = registry.get(registry.default_id).id
    return ModelList(default=default, models=[model_out(i, default) for i in registry.list()])


@router.get("/models/{ref}", response_model=ModelOut, responses={404: {"model": Problem}})
def get_model(ref: str, registry: RegistryDep) -> ModelOut:
    try:
        info = registry.get(ref)
    except RegistryError as exc:
        raise ApiError(404, "Not found", str(exc), code="model-not-found") from None
    return model_out(info, registry.get(registry.default_id).id)
