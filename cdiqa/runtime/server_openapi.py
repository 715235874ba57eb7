"""The OpenAPI 3.1 description of the HTTP server, served at ``GET /openapi.json``.

Written by hand to describe what ``cdiqa.runtime.server`` does; tests/runtime/test_server.py
checks that every route of the app is here and the reverse, and that every status code the
server answered in the tests is listed for its route.
"""

from __future__ import annotations

#: error ``code`` values, by HTTP status (also the ``kind`` label of cdiqa_errors_total)
ERROR_CODES = {
    400: ["invalid_body", "missing_field", "unknown_field", "invalid_field", "invalid_image",
          "count_mismatch", "too_many_pairs", "unknown_domain"],
    404: ["not_found"],
    405: ["method_not_allowed"],
    408: ["body_timeout"],
    413: ["payload_too_large", "image_too_large", "request_too_large"],
    415: ["unsupported_media_type"],
    422: ["size_mismatch", "image_too_small", "unprocessable_image"],
    500: ["internal"],
    503: ["not_ready", "queue_full", "busy", "shutting_down"],
    504: ["timeout"],
}

_DESCRIPTIONS = {
    400: "Malformed request: bad multipart body, a missing/unknown field, undecodable image "
         "bytes, ref/dist counts that differ, too many pairs, or an unknown domain.",
    408: "The request body did not arrive within the server's per-request timeout.",
    413: "Request body over the size limit, an image over the pixel limit (max_pixels, "
         "checked from its header), or a request whose images could never fit the "
         "in-flight pixel budget.",
    415: "Content type is not multipart/form-data.",
    422: "Images that decode but cannot be scored together (sizes differ, under 64 x 64, "
         "values out of range).",
    500: "Internal error (a bug): the server keeps serving.",
    503: "Not ready yet (loading / warming up), the queue is full, the in-flight pixel "
         "budget is taken (busy), or shutting down; retry after Retry-After seconds.",
    504: "The request was not scored within the server's per-request timeout.",
}


def _error(status: int) -> dict:
    resp = {"description": _DESCRIPTIONS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if status == 503:
        resp["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying",
                                           "schema": {"type": "integer"}}}
    return resp


def _json(description: str, schema: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _request_id() -> dict:
    from cdiqa.runtime.server import REQUEST_ID  # the one definition of what is echoed

    return {"name": "X-Request-Id", "in": "header", "required": False,
            "description": "Echoed in the response (header and JSON 'id') when it matches the "
                           "pattern after stripping surrounding whitespace; absent or any "
                           "other value: a generated 32-character id instead",
            "schema": {"type": "string", "pattern": f"^{REQUEST_ID.pattern}$"}}


_SCORE_ERRORS = (400, 408, 413, 415, 422, 500, 503, 504)


def _domain_parameter(domains: list[str]) -> dict:
    return {"name": "domain", "in": "query", "required": False,
            "description": "Domain profile (head) to score with; may also be a form field",
            "schema": {"type": "string", "enum": domains}}


def _form(multiple: bool, domains: list[str]) -> dict:
    image = {"type": "string", "contentMediaType": "image/*",
             "description": "PNG, JPEG or TIFF file content"}
    field = {"type": "array", "items": image, "minItems": 1} if multiple else image
    props = {"ref": field, "dist": field,
             "domain": {"type": "string", "enum": domains}}
    return {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["ref", "dist"], "properties": props,
        "additionalProperties": False}}}}


def openapi(domains: list[str], default_domain: str, *, version: str, max_body: int,
            max_pairs: int) -> dict:
    """The OpenAPI document for a server of a bundle with ``domains``."""
    score_responses = {"200": _json("The pair's quality", "Score")}
    batch_responses = {"200": _json("The pairs' qualities, in request order", "BatchScores")}
    for status in _SCORE_ERRORS:
        score_responses[str(status)] = batch_responses[str(status)] = _error(status)
    limits = (f"Body at most {max_body} bytes; the default domain is '{default_domain}'. "
              "Pairs from concurrent requests are scored together in micro-batches.")
    return {
        "openapi": "3.1.0",
        "info": {"title": "cdiqa", "version": version,
                 "description": "Full-reference image quality: score (reference, distorted) "
                                "image pairs in [0, 1], higher is better (1 for identical)."},
        "paths": {
            "/v1/score": {"post": {
                "summary": "Score one pair", "operationId": "score", "description": limits,
                "parameters": [_domain_parameter(domains), _request_id()],
                "requestBody": _form(False, domains), "responses": score_responses}},
            "/v1/score/batch": {"post": {
                "summary": "Score several pairs (ref and dist repeated, paired in order)",
                "operationId": "score_batch",
                "description": f"{limits} At most {max_pairs} pairs per request.",
                "parameters": [_domain_parameter(domains), _request_id()],
                "requestBody": _form(True, domains), "responses": batch_responses}},
            "/healthz": {"get": {"summary": "Liveness: the process serves HTTP",
                                 "operationId": "healthz",
                                 "responses": {"200": _json("Alive", "Health")}}},
            "/readyz": {"get": {"summary": "Readiness: the model is loaded and warm",
                                "operationId": "readyz",
                                "responses": {"200": _json("Ready", "Ready"),
                                              "503": _error(503)}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics",
                                 "responses": {"200": {"description": "Prometheus text format",
                                                       "content": {"text/plain": {
                                                           "schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                      "responses": {"200": {"description": "OpenAPI 3.1",
                                                            "content": {"application/json": {
                                                                "schema": {"type": "object"}}}}}}},
        },
        "components": {"schemas": _schemas()},
    }


def _schemas() -> dict:
    codes = sorted(c for cs in ERROR_CODES.values() for c in cs)
    return {
        "Score": {"type": "object", "required": ["score", "domain", "id"], "properties": {
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "domain": {"type": "string"}, "id": {"type": "string"}}},
        "BatchScores": {"type": "object", "required": ["scores", "domain", "id"], "properties": {
            "scores": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}},
            "domain": {"type": "string"}, "id": {"type": "string"}}},
        "Health": {"type": "object", "properties": {"status": {"const": "ok"}}},
        "Ready": {"type": "object", "properties": {
            "status": {"const": "ready"}, "model_id": {"type": "string"},
            "domains": {"type": "array", "items": {"type": "string"}},
            "default_domain": {"type": "string"}, "device": {"type": "string"}}},
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string", "enum": codes},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "The form field or parameter at "
                                                           "fault, e.g. 'dist' or 'ref[2]'"}}}}},
    }
