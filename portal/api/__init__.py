"""The REST API v1, one blueprint per area, and its OpenAPI description."""

from portal.api import (
    analyses,
    archive,
    assistant,
    conversions,
    dicomweb,
    exports,
    jobs,
    navigation,
    notebooks,
    openapi,
    pacs,
    readings,
    rois,
    tracts,
    viewer,
)

BLUEPRINTS = (
    archive.blueprint, conversions.blueprint, jobs.blueprint, pacs.blueprint, rois.blueprint, viewer.blueprint, openapi.blueprint,
    dicomweb.blueprint, assistant.blueprint, exports.blueprint, readings.blueprint, analyses.blueprint,
    notebooks.blueprint, tracts.blueprint,
    navigation.blueprint,
)
