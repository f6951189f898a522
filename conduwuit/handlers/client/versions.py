"""``GET /_matrix/client/versions``: which spec versions and MSCs clients may use."""

from __future__ import annotations

from quart import Blueprint, Response

from conduwuit.handlers.json import json_response

bp = Blueprint("client_versions", __name__)

# Versions whose endpoints clients may call here. Clients pick features by the
# highest version they share with us, so only versions we serve are listed.
SPEC_VERSIONS: tuple[str, ...] = (
    "r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
    "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11", "v1.12",
)

# Unstable features (MSCs) implemented here; a feature appears when its endpoints do.
UNSTABLE_FEATURES: dict[str, bool] = {
    "uk.half-shot.msc2666.query_mutual_rooms": True,  # mutual rooms
    "org.matrix.msc2946": True,  # space hierarchy
    "org.matrix.msc3827": True,  # room types in the public room directory
    "org.matrix.msc3030": True,  # timestamp_to_event
    "org.matrix.simplified_msc3575": True,  # simplified sliding sync (MSC4186)
}


@bp.get("/_matrix/client/versions")
async def versions() -> Response:
    return json_response({"versions": list(SPEC_VERSIONS), "unstable_features": UNSTABLE_FEATURES})
